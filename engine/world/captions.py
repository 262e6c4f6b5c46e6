"""Captions: varied natural phrases that state some of a scene's attributes, like real captions.

`describe(scene, rng)` returns the caption and the attributes it *states*; adherence is judged on
the stated ones only (GenEval-style). Training captions leave attributes unstated at realistic
rates, which keeps the unconditional spread wide and guidance worth having.
"""

from __future__ import annotations

import random
import re

from .scene import Scene

SHAPE_WORDS = {
    "circle": ["circle", "disc", "round shape"],
    "square": ["square", "box shape", "square block"],
    "triangle": ["triangle", "triangular shape"],
    "star": ["star", "five pointed star"],
    "cross": ["cross", "plus sign"],
}
COLOUR_WORDS = {c: [c] for c in ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")}
COLOUR_WORDS["purple"] = ["purple", "violet"]
BACKGROUND_WORDS = {
    "white": ["white"], "black": ["black", "dark"], "gray": ["gray", "grey"],
    "pink": ["pink"], "sky": ["sky blue", "pale blue"],
}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
POSITION_WORDS = {
    "center": ["in the center", "in the middle", "centered"],
    "left": ["on the left", "at the left side", "on the left side"],
    "right": ["on the right", "at the right side", "on the right side"],
    "top": ["at the top", "near the top", "up high"],
    "bottom": ["at the bottom", "near the bottom", "down low"],
}
TEXTURE_ADJ = {"striped": ["striped"], "checkered": ["checkered", "checked"]}
TEXTURE_SUFFIX = {"striped": ["with stripes"], "checkered": ["with a checkerboard pattern", "with checks"]}
BACKGROUND_FRAMES = ["on a {} background", "against a {} backdrop", "over {}"]
FRAMES = ["{}", "{}", "a picture of {}", "an image showing {}", "{}, simple drawing",
          "there is {}", "a photo of {}", "{} in the picture"]
DIGIT_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
               "6": "six", "7": "seven", "8": "eight", "9": "nine"}
DIGIT_FRAMES = ["the digit {d}", "the number {d}", "a {c}{d}", "the numeral {d}",
                "the digit {w}", "the number {w}", "a written {w}"]
EXPRESSION_WORDS = {
    "happy": ["happy", "smiling", "cheerful"], "sad": ["sad", "frowning", "unhappy"],
    "surprised": ["surprised", "astonished", "shocked"], "neutral": ["neutral", "expressionless", "blank"],
}
FACE_FRAMES = ["a {e}{c}face", "a {c}face that looks {e2}", "a {c}smiley with a {e}expression"]
PAIR_FRAMES = {
    "horizontal": ["{a} to the left of {b}", "{b} to the right of {a}", "{a} on the left and {b} on the right",
                   "{a} with {b} to its right"],
    "vertical": ["{a} above {b}", "{b} below {a}", "{a} on top and {b} underneath",
                 "{b} under {a}", "{a} with {b} beneath it"],
}
# The whole vocabulary of every phrase above, so a tokenizer can be built without sampling.
_ALL_TEXT = [SHAPE_WORDS, COLOUR_WORDS, BACKGROUND_WORDS, SIZE_WORDS, POSITION_WORDS, TEXTURE_ADJ,
             TEXTURE_SUFFIX, BACKGROUND_FRAMES, FRAMES, DIGIT_WORDS, DIGIT_FRAMES, EXPRESSION_WORDS,
             FACE_FRAMES, PAIR_FRAMES, ["a an the face with"]]

# How often an attribute is stated in a training caption.
MENTION = {"shape": 0.95, "colour": 0.85, "size": 0.4, "position": 0.45, "background": 0.4,
           "texture": 0.75, "digit": 1.0, "face_colour": 0.5, "expression": 0.85,
           "pair_colour": 0.85, "layout": 0.9}

# Attributes an evaluation caption of each category always states.
REQUIRED = {
    "basic": {"shape", "colour"},
    "fine_detail": {"shape", "texture"},
    "rare": {"shape", "colour", "texture"},
    "text": {"digit"},
    "faces": {"expression"},
    "long": {"shape_a", "shape_b", "colour_a", "colour_b", "layout"},
}


def vocabulary() -> list[str]:
    words: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(k), walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            words.update(tokenize(re.sub(r"\{[^}]*\}", " ", x)))

    walk(_ALL_TEXT)
    return sorted(words)


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z]+|[0-9]", text.lower())


def _say(rng: random.Random, p: float, forced: bool) -> bool:
    return forced or rng.random() < p


def _object_phrase(scene: Scene, rng: random.Random, require: set[str], stated: dict) -> str:
    adj, suffix = [], []
    if _say(rng, MENTION["size"], "size" in require):
        adj.append(rng.choice(SIZE_WORDS[scene.size]))
        stated["size"] = scene.size
    use_texture = scene.texture != "solid" and _say(rng, MENTION["texture"], "texture" in require)
    texture_as_suffix = use_texture and rng.random() < 0.4
    if use_texture and not texture_as_suffix:
        adj.append(rng.choice(TEXTURE_ADJ[scene.texture]))
    colour_after = False
    if _say(rng, MENTION["colour"], "colour" in require):
        if rng.random() < 0.2:
            colour_after = True
        else:
            adj.append(rng.choice(COLOUR_WORDS[scene.colour]))
        stated["colour"] = scene.colour
    if _say(rng, MENTION["shape"], "shape" in require):
        noun = rng.choice(SHAPE_WORDS[scene.shape])
        stated["shape"] = scene.shape
    else:
        noun = "shape"
    if use_texture:
        stated["texture"] = scene.texture
        if texture_as_suffix:
            suffix.append(rng.choice(TEXTURE_SUFFIX[scene.texture]))
    if colour_after:
        suffix.insert(0, "in " + rng.choice(COLOUR_WORDS[scene.colour]))
    if _say(rng, MENTION["position"], "position" in require):
        suffix.append(rng.choice(POSITION_WORDS[scene.position]))
        stated["position"] = scene.position
    words = adj + [noun]
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article] + words + suffix)


def _with_background(phrase: str, scene: Scene, rng: random.Random, require: set[str], stated: dict) -> str:
    if _say(rng, MENTION["background"], "background" in require):
        stated["background"] = scene.background
        bg = rng.choice(BACKGROUND_WORDS[scene.background])
        return phrase + " " + rng.choice(BACKGROUND_FRAMES).format(bg)
    return phrase


def _digit_phrase(scene: Scene, rng: random.Random, require: set[str], stated: dict) -> str:
    stated["digit"] = scene.digit
    frame = rng.choice(DIGIT_FRAMES)
    colour = ""
    if _say(rng, MENTION["colour"], "colour" in require):
        colour = rng.choice(COLOUR_WORDS[scene.colour]) + " "
        stated["colour"] = scene.colour
        if "{c}" not in frame:
            frame = frame + " in {c2}"
    phrase = frame.format(d=scene.digit, w=DIGIT_WORDS[scene.digit], c=colour, c2=colour.strip())
    return phrase.replace("a o", "an o").replace("a e", "an e")


def _face_phrase(scene: Scene, rng: random.Random, require: set[str], stated: dict) -> str:
    colour = ""
    if _say(rng, MENTION["face_colour"], "colour" in require):
        colour = rng.choice(COLOUR_WORDS[scene.colour]) + " "
        stated["colour"] = scene.colour
    if _say(rng, MENTION["expression"], "expression" in require):
        stated["expression"] = scene.expression
        words = EXPRESSION_WORDS[scene.expression]
        frame = rng.choice(FACE_FRAMES)
        phrase = frame.format(e=rng.choice(words) + " ", e2=rng.choice(words), c=colour)
        phrase = phrase.replace(" a expression", " an expression")
    else:
        phrase = f"a {colour}face"
    phrase = " ".join(phrase.split())
    return re.sub(r"\ba (?=[aeiou])", "an ", phrase)


def _pair_phrase(scene: Scene, rng: random.Random, require: set[str], stated: dict) -> str:
    def np(shape: str, colour: str, key: str) -> str:
        words = []
        if _say(rng, MENTION["pair_colour"], "colour_" + key in require):
            words.append(rng.choice(COLOUR_WORDS[colour]))
            stated["colour_" + key] = colour
        words.append(rng.choice(SHAPE_WORDS[shape]))
        stated["shape_" + key] = shape
        return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)

    a = np(scene.shape_a, scene.colour_a, "a")
    b = np(scene.shape_b, scene.colour_b, "b")
    if _say(rng, MENTION["layout"], "layout" in require):
        stated["layout"] = scene.layout
        return rng.choice(PAIR_FRAMES[scene.layout]).format(a=a, b=b)
    # No relation stated: order is free, so the judge checks the objects only, in either order.
    stated["unordered"] = "1"
    return f"{a} and {b}" if rng.random() < 0.5 else f"{b} and {a}"


def describe(scene: Scene, rng: random.Random, require: set[str] = frozenset()) -> tuple[str, dict[str, str]]:
    """Caption a scene. Returns (caption, stated attributes). `require`: attributes always stated."""
    stated: dict[str, str] = {}
    if scene.kind == "object":
        phrase = _object_phrase(scene, rng, require, stated)
    elif scene.kind == "digit":
        phrase = _digit_phrase(scene, rng, require, stated)
    elif scene.kind == "face":
        phrase = _face_phrase(scene, rng, require, stated)
    else:
        phrase = _pair_phrase(scene, rng, require, stated)
    phrase = _with_background(phrase, scene, rng, require, stated)
    stated["kind"] = scene.kind
    return rng.choice(FRAMES).format(phrase), stated
