"""Prompt adherence on the embedded domain (GenEval-style): an image is adherent when the judge
confirms every attribute its prompt states; adherence is the fraction of adherent images."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

from ..families.base import Family
from ..prompts import Prompt
from ..sampling import sample
from ..world import judge as world_judge


def score(judge: world_judge.Judge, images, prompts: list[Prompt]) -> list[list[str]]:
    """For each image (uint8 (B, H, W, 3) tensor or array), the stated attributes it misses."""
    arr = images.numpy() if hasattr(images, "numpy") else images
    preds = world_judge.predict(judge, world_judge.to_tensor(arr))
    return [world_judge.missed(p.stated, pred) for p, pred in zip(prompts, preds)]


def summarize(prompts: list[Prompt], misses: list[list[str]]) -> dict:
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for p, m in zip(prompts, misses):
        by_cat[p.category].append(not m)
    ok = [not m for m in misses]
    return {
        "adherence": round(sum(ok) / max(1, len(ok)), 4),
        "by_category": {c: round(sum(v) / len(v), 4) for c, v in sorted(by_cat.items())},
        "n": len(prompts),
        "missed": dict(Counter(a for m in misses for a in m).most_common()),
    }


def evaluate(family: Family, judge: world_judge.Judge, prompts: list[Prompt], *, steps: int, guidance: float,
             batch_size: int = 50, progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate every prompt at its own seed and score adherence overall and per category."""
    size = family.default_size
    misses: list[list[str]] = []
    seconds = 0.0
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i:i + batch_size]
        images, record = sample(family, [p.text for p in batch], steps=steps, guidance=guidance,
                                seeds=[p.seed for p in batch], height=size, width=size)
        seconds += record.seconds
        misses += score(judge, images, batch)
        if progress:
            progress(min(i + batch_size, len(prompts)), len(prompts))
    out = summarize(prompts, misses)
    out.update({"steps": steps, "guidance": guidance, "seconds": round(seconds, 2)})
    return out
