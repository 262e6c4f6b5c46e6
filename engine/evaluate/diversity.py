"""Diversity over seeds (DESIGN.md §12): does a model draw different images for different seeds?

A student can match its teacher on adherence and FID while drawing nearly the same image for
every seed (distribution matching is mode-seeking). Each prompt is rendered at K seeds:
- embedded domain: a prompt leaves some attributes of its scene unstated (a size, a position, a
  background); the judge reads them in the K images, and a prompt's diversity is the mean, over
  its unstated attributes, of the normalised entropy of what the K images show (1: as spread as
  K images can be, 0: always the same). The score is the mean over prompts, with a bootstrap 95%
  interval over prompts;
- real models: the mean pairwise cosine distance between the K images' feature vectors (a feature
  network the user gives: CLIP image features), `Unavailable` without one.
Compare a model's number with its teacher's at the same prompts and seeds: the domain fixes how
much an unstated attribute can vary.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import torch

from ..families.base import Family
from ..prompts import Prompt
from ..sampling import sample
from ..world import HEADS
from ..world import judge as world_judge

# The attributes a scene of each kind has (engine/world/scene.py), which a prompt may leave unstated.
APPLIES = {"object": ("background", "shape", "colour", "size", "position", "texture"),
           "digit": ("background", "colour", "digit"),
           "face": ("background", "colour", "expression"),
           "pair": ("background", "layout", "shape_a", "colour_a", "shape_b", "colour_b")}
K_DEFAULT = 8


def seed_of(prompt: Prompt, j: int) -> int:
    """The j-th seed of a prompt's K (the 0th is the prompt's own, as adherence renders it)."""
    return prompt.seed if j == 0 else (prompt.seed * 7919 + j * 104_729) % (2**31)


def normalised_entropy(values: list[str], k: int, classes: int) -> float:
    """Entropy of `values` over log(min(k, classes)): 1 when K draws are as spread as they can be."""
    counts = Counter(values)
    h = -sum(c / k * math.log(c / k) for c in counts.values())
    top = math.log(min(k, classes))
    return h / top if top > 0 else 0.0


def prompt_diversity(prompt: Prompt, readings: list[dict[str, str]]) -> dict[str, float]:
    """attribute -> normalised entropy over one prompt's K judge readings, for its unstated attributes."""
    kind = prompt.stated.get("kind") or Counter(r["kind"] for r in readings).most_common(1)[0][0]
    k = len(readings)
    return {a: normalised_entropy([r[a] for r in readings], k, len(HEADS[a]))
            for a in APPLIES.get(kind, ()) if a not in prompt.stated}


def bootstrap_interval(values: list[float], rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The 95% bootstrap interval of the mean of `values` (resampled with a fixed seed)."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def summarize(per_prompt: list[dict[str, float]], k: int) -> dict:
    """Overall diversity (mean over prompts with an unstated attribute), its interval, per attribute."""
    scores = [sum(d.values()) / len(d) for d in per_prompt if d]
    by_attr: dict[str, list[float]] = {}
    for d in per_prompt:
        for a, v in d.items():
            by_attr.setdefault(a, []).append(v)
    lo, hi = bootstrap_interval(scores)
    return {"diversity": round(sum(scores) / len(scores), 4) if scores else float("nan"),
            "interval": [round(lo, 4), round(hi, 4)], "k": k, "n": len(scores),
            "by_attribute": {a: round(sum(v) / len(v), 4) for a, v in sorted(by_attr.items())}}


def render_seeds(family: Family, prompts: list[Prompt], k: int, *, steps: int, guidance: float,
                 seeds: Callable[[Prompt, int], int] = seed_of) -> torch.Tensor:
    """Each prompt at K seeds, in one batch: uint8 images (len(prompts) * K, H, W, 3), a prompt's K together."""
    size = family.default_size
    images, _ = sample(family, [p.text for p in prompts for _ in range(k)], steps=steps, guidance=guidance,
                       seeds=[seeds(p, j) for p in prompts for j in range(k)], height=size, width=size)
    return images


def evaluate(family: Family, judge: world_judge.Judge, prompts: list[Prompt], *, steps: int, guidance: float,
             k: int = K_DEFAULT, seeds: Callable[[Prompt, int], int] = seed_of, batch_size: int = 64,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Embedded-domain diversity of a model over `prompts`, each at K seeds (`seeds(prompt, j)`),
    about `batch_size` images a batch."""
    per_prompt = []
    for part, images in _batches(family, prompts, k, steps, guidance, seeds, batch_size, progress):
        readings = world_judge.predict(judge, world_judge.to_tensor(images.numpy()))
        per_prompt += [prompt_diversity(p, readings[j * k:(j + 1) * k]) for j, p in enumerate(part)]
    return {**summarize(per_prompt, k), "steps": steps, "guidance": guidance}


def per_prompt(family: Family, prompts: list[Prompt], *, steps: int, guidance: float, k: int,
               judge: world_judge.Judge | None = None, features: Callable[[torch.Tensor], torch.Tensor] | None = None,
               batch_size: int = 64) -> list[float | None]:
    """Each prompt's diversity over K seeds: the judge's reading of its unstated attributes (None for a
    prompt that states them all), else the mean pairwise cosine distance of `features(images)`."""
    out: list[float | None] = []
    for part, images in _batches(family, prompts, k, steps, guidance, seed_of, batch_size, None):
        if judge is not None:
            readings = world_judge.predict(judge, world_judge.to_tensor(images.numpy()))
            for j, p in enumerate(part):
                d = prompt_diversity(p, readings[j * k:(j + 1) * k])
                out.append(sum(d.values()) / len(d) if d else None)
        else:
            f = features(images)
            out += [feature_diversity(f[j * k:(j + 1) * k]) for j in range(len(part))]
    return out


def _batches(family, prompts, k, steps, guidance, seeds, batch_size, progress):
    """(prompts, their images at K seeds each), about `batch_size` images at a time."""
    chunk = max(1, batch_size // k)
    for i in range(0, len(prompts), chunk):
        part = prompts[i:i + chunk]
        yield part, render_seeds(family, part, k, steps=steps, guidance=guidance, seeds=seeds)
        if progress:
            progress(min(i + chunk, len(prompts)), len(prompts))


def feature_diversity(features: torch.Tensor) -> float:
    """Mean pairwise cosine distance between K feature vectors (K, D) of one prompt's images."""
    f = torch.nn.functional.normalize(features.double(), dim=1)
    k = f.shape[0]
    sim = f @ f.T
    return float((1 - sim)[~torch.eye(k, dtype=torch.bool)].mean()) if k > 1 else 0.0
