"""The embedded shapes world: a procedural domain of small images, captions and attribute labels."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from ..prompts import Prompt
from .captions import REQUIRED, describe, tokenize, vocabulary
from .render import render
from .scene import CATEGORIES, HEADS, Scene, mislabel, sample_category_scene, sample_scene

__all__ = ["CATEGORIES", "HEADS", "Example", "Prompt", "Scene", "describe", "make_example",
           "mislabel", "render", "sample_prompts", "tokenize", "vocabulary"]

IMAGE_SIZE = 32


@dataclass(frozen=True)
class Example:
    image: Image.Image
    caption: str
    stated: dict[str, str]
    scene: Scene


def make_example(seed: int, distribution: str = "train", size: int = IMAGE_SIZE) -> Example:
    """One (image, caption, stated attributes, scene), fully determined by `seed`."""
    rng = random.Random(seed)
    scene = sample_scene(rng, distribution)
    caption, stated = describe(scene, rng)
    return Example(render(scene, size), caption, stated, scene)


def sample_prompts(n: int, seed: int = 0, category: str | None = None) -> list[Prompt]:
    """`n` fresh evaluation prompts, spread evenly over the categories (or all from one)."""
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    rng = random.Random(f"prompts-{seed}")
    out = []
    for i in range(n):
        cat = category or CATEGORIES[i % len(CATEGORIES)]
        scene = sample_category_scene(rng, cat)
        text, stated = describe(scene, rng, REQUIRED[cat])
        out.append(Prompt(text, seed=rng.randrange(2**31), category=cat, stated=stated))
    return out
