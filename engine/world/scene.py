"""Scenes of the embedded shapes world: what is in an image, as attribute labels.

A scene is one of four kinds: a single `object`, a `digit` glyph, a simple `face`, or a `pair` of
objects with a spatial layout. Every attribute the judge can check is a field here; fields that do
not apply to a kind are None. Scenes are sampled from two distributions: `train` (what the teacher
sees: some combinations are deliberately rare) and `uniform` (what the judge sees: everything
equally often, so it is accurate on rare combinations too).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields, replace

KINDS = ("object", "digit", "face", "pair")
SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
BACKGROUNDS = ("white", "black", "gray", "pink", "sky")
SIZES = ("small", "large")
POSITIONS = ("center", "left", "right", "top", "bottom")
TEXTURES = ("solid", "striped", "checkered")
DIGITS = tuple(str(d) for d in range(10))
EXPRESSIONS = ("happy", "sad", "surprised", "neutral")
LAYOUTS = ("horizontal", "vertical")  # pair: object a is left of (horizontal) or above (vertical) b
FACE_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white")

# (shape, colour) and (shape, texture) combinations shown at RARE_RATE of their natural frequency
# in training: the embedded analogue of rare styles.
RARE_COMBOS = (
    ("star", "purple"), ("triangle", "orange"), ("cross", "green"), ("circle", "white"),
    ("square", "yellow"), ("star", "checkered"), ("triangle", "striped"),
)
RARE_RATE = 0.03

# Evaluation categories (the seed's golden-set edge cases) and the scene kind each draws from.
CATEGORIES = ("basic", "fine_detail", "text", "faces", "long", "rare")

# The attribute vocabulary the judge predicts: head name -> its classes.
HEADS: dict[str, tuple[str, ...]] = {
    "kind": KINDS,
    "background": BACKGROUNDS,
    "shape": SHAPES,
    "colour": COLOURS,
    "size": SIZES,
    "position": POSITIONS,
    "texture": TEXTURES,
    "digit": DIGITS,
    "expression": EXPRESSIONS,
    "layout": LAYOUTS,
    "shape_a": SHAPES,
    "colour_a": COLOURS,
    "shape_b": SHAPES,
    "colour_b": COLOURS,
}


@dataclass(frozen=True)
class Scene:
    kind: str
    background: str
    shape: str | None = None  # object
    colour: str | None = None  # object, digit, face
    size: str | None = None  # object
    position: str | None = None  # object
    texture: str | None = None  # object
    digit: str | None = None  # digit
    expression: str | None = None  # face
    layout: str | None = None  # pair
    shape_a: str | None = None  # pair: left or top object
    colour_a: str | None = None
    shape_b: str | None = None  # pair: right or bottom object
    colour_b: str | None = None
    jitter: tuple[float, float] = (0.0, 0.0)  # small offset of the whole drawing, fraction of width

    def labels(self) -> dict[str, str]:
        """The attributes that apply to this scene (head name -> class)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name in HEADS and getattr(self, f.name) is not None}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Scene:
        d = dict(d)
        d["jitter"] = tuple(d.get("jitter", (0.0, 0.0)))
        return cls(**d)


def is_rare(shape: str, colour: str | None, texture: str | None) -> bool:
    return (shape, colour) in RARE_COMBOS or (shape, texture) in RARE_COMBOS


def _background_for(rng: random.Random, *colours: str) -> str:
    # White on white or black on black would erase the object: keep the object visible.
    options = [b for b in BACKGROUNDS if b not in colours]
    return rng.choice(options)


def _jitter(rng: random.Random, amount: float = 0.04) -> tuple[float, float]:
    return (rng.uniform(-amount, amount), rng.uniform(-amount, amount))


def _object(rng: random.Random, *, textured: bool | None, rare: bool | None) -> Scene:
    """An object scene. textured/rare: None = natural frequency, True/False = forced."""
    while True:
        shape, colour = rng.choice(SHAPES), rng.choice(COLOURS)
        if textured is None:
            texture = rng.choices(TEXTURES, weights=(0.6, 0.2, 0.2))[0]
        else:
            texture = rng.choice(TEXTURES[1:]) if textured else "solid"
        r = is_rare(shape, colour, texture)
        if rare is True and not r:
            continue
        if rare is False and r:
            continue
        if rare is None and r and rng.random() > RARE_RATE:
            continue
        break
    return Scene(kind="object", background=_background_for(rng, colour), shape=shape,
                 colour=colour, size=rng.choice(SIZES), position=rng.choice(POSITIONS),
                 texture=texture, jitter=_jitter(rng))


def _digit(rng: random.Random) -> Scene:
    colour = rng.choice(COLOURS)
    return Scene(kind="digit", background=_background_for(rng, colour), digit=rng.choice(DIGITS),
                 colour=colour, jitter=_jitter(rng, 0.05))


def _face(rng: random.Random) -> Scene:
    colour = rng.choice(FACE_COLOURS)
    return Scene(kind="face", background=_background_for(rng, colour), colour=colour,
                 expression=rng.choice(EXPRESSIONS), jitter=_jitter(rng, 0.05))


def _pair(rng: random.Random) -> Scene:
    while True:
        sa, ca, sb, cb = rng.choice(SHAPES), rng.choice(COLOURS), rng.choice(SHAPES), rng.choice(COLOURS)
        if (sa, ca) != (sb, cb):
            break
    return Scene(kind="pair", background=_background_for(rng, ca, cb), layout=rng.choice(LAYOUTS),
                 shape_a=sa, colour_a=ca, shape_b=sb, colour_b=cb, jitter=_jitter(rng, 0.03))


# How often each kind appears in the teacher's training data.
TRAIN_KIND_WEIGHTS = {"object": 0.45, "digit": 0.17, "face": 0.15, "pair": 0.23}


def sample_scene(rng: random.Random, distribution: str = "train") -> Scene:
    """One scene from the `train` distribution (rare combinations rare) or `uniform` (judge)."""
    if distribution not in ("train", "uniform"):
        raise ValueError(f"distribution must be 'train' or 'uniform', got {distribution!r}")
    kind = rng.choices(list(TRAIN_KIND_WEIGHTS), weights=list(TRAIN_KIND_WEIGHTS.values()))[0]
    if kind == "object":
        if distribution == "uniform":
            shape, colour, texture = rng.choice(SHAPES), rng.choice(COLOURS), rng.choice(TEXTURES)
            return Scene(kind="object", background=_background_for(rng, colour), shape=shape,
                         colour=colour, size=rng.choice(SIZES), position=rng.choice(POSITIONS),
                         texture=texture, jitter=_jitter(rng))
        return _object(rng, textured=None, rare=None)
    return {"digit": _digit, "face": _face, "pair": _pair}[kind](rng)


def sample_category_scene(rng: random.Random, category: str) -> Scene:
    """A scene for an evaluation category (the seed's golden-set edge cases)."""
    if category == "basic":
        return _object(rng, textured=False, rare=False)
    if category == "fine_detail":
        return _object(rng, textured=True, rare=False)
    if category == "rare":
        return _object(rng, textured=None if rng.random() < 0.5 else False, rare=True)
    if category == "text":
        return _digit(rng)
    if category == "faces":
        return _face(rng)
    if category == "long":
        return _pair(rng)
    raise ValueError(f"category must be one of {', '.join(CATEGORIES)}, got {category!r}")


def mislabel(scene: Scene, rng: random.Random) -> Scene:
    """The scene a wrong caption describes: one of its attributes (not its kind) changed to another value.

    Captions of real training data misstate what the picture shows now and then (alt-text written
    for a different crop, a colour misnamed, left and right swapped); a model trained on such pairs
    learns a conditional distribution that strays from its prompt, which guidance pulls back.
    """
    values = {**HEADS, "colour": FACE_COLOURS if scene.kind == "face" else COLOURS}
    name = rng.choice(sorted(k for k in scene.labels() if k != "kind"))
    wrong = rng.choice([v for v in values[name] if v != getattr(scene, name)])
    return replace(scene, **{name: wrong})
