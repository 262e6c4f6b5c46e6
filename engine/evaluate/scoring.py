"""Scoring an evaluation's images against the teacher's at the same prompts and seeds: adherence
(the domain's judge), CLIP score, PSNR and a feature distance per image; the Fréchet distance of the
two sets (the judge's features on the embedded domain, Inception on real models); per category."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from ..families.base import Family
from ..measure import psnr_per_image
from ..prompts import Prompt
from ..store import Store
from ..world import judge as world_judge
from . import metrics
from .config import EvalConfig


def mean(values) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return round(float(np.mean(vals)), 4) if vals else None


def _value(v):
    return None if isinstance(v, metrics.Unavailable) else (round(v, 4) if isinstance(v, float) else v)


@dataclass
class Scorers:
    """What the run scores with; each is a working object or the reason it is unavailable."""
    judge: object | metrics.Unavailable = field(
        default_factory=lambda: metrics.Unavailable("the model's domain has no judge"))
    space: object = None  # FID feature space: an nn.Module or torchmetrics Inception kwargs, or Unavailable
    space_name: str = ""
    clip: object = None  # (model, processor) or Unavailable


def scorers(family: Family, cfg: EvalConfig, feature_space=None, clip=None) -> Scorers:
    """The embedded judge, the FID feature space and the CLIP model for this run.
    `feature_space` (an nn.Module on uint8 images) and `clip` ((model, processor)) override what the
    config names, for models and tests that bring their own networks."""
    s = Scorers()
    judge = family.judge()
    if judge is not None:
        s.judge = judge
        s.space, s.space_name = metrics.JudgeFeatures(judge), "judge features"
    else:
        s.space, s.space_name = metrics.inception_fid_space(cfg.inception), "Inception-v3 pool3"
    if feature_space is not None:
        s.space, s.space_name = feature_space, type(feature_space).__name__
    s.clip = clip if clip is not None else metrics.load_clip(cfg.clip_model)
    return s


def _features(space, images: torch.Tensor) -> torch.Tensor | None:
    if isinstance(space, torch.nn.Module):
        return space(metrics.to_nchw(images)).double()
    return None


def score(prompts: list[Prompt], images: torch.Tensor, ref: torch.Tensor, s: Scorers) -> tuple[dict, list[dict]]:
    """Run-level metrics (overall and per category) and per-image rows."""
    n = len(prompts)
    items = [{"idx": i, "prompt": p.text, "category": p.category, "seed": p.seed} for i, p in enumerate(prompts)]
    unavailable: dict[str, str] = {}
    for it, v in zip(items, psnr_per_image(images, ref).tolist()):
        it["psnr"] = v
    # adherence: the judge checks each prompt's stated attributes
    if isinstance(s.judge, metrics.Unavailable):
        unavailable["adherence"] = f"the judge reads the embedded domain only ({s.judge.reason})"
    elif not any(p.stated for p in prompts):
        unavailable["adherence"] = "the golden set states no attributes for the judge to check ('stated')"
    else:
        preds = world_judge.predict(s.judge, world_judge.to_tensor(images.numpy()))
        for it, p, pred in zip(items, prompts, preds):
            if p.stated:
                it["missed"] = world_judge.missed(p.stated, pred)
                it["adherent"] = int(not it["missed"])
    # closeness in a feature space: the judge's (embedded), else CLIP's image embeddings
    feats = _features(s.space, images) if not isinstance(s.space, metrics.Unavailable) else None
    if feats is not None and not isinstance(s.judge, metrics.Unavailable):
        dist = metrics.cosine_distance(feats, _features(s.space, ref))
    elif not isinstance(s.clip, metrics.Unavailable):
        dist = metrics.cosine_distance(metrics.clip_image_features(images, s.clip),
                                       metrics.clip_image_features(ref, s.clip))
    else:
        dist = None
        unavailable["feature_distance"] = f"needs the embedded judge or a CLIP model ({s.clip.reason})"
    for it, v in zip(items, dist or [None] * n):
        it["feature_distance"] = v
    if isinstance(s.clip, metrics.Unavailable):
        unavailable["clip_score"] = s.clip.reason
    else:
        for it, v in zip(items, metrics.clip_scores(images, [p.text for p in prompts], s.clip)):
            it["clip_score"] = v
    if isinstance(s.space, metrics.Unavailable):
        unavailable["fid"] = s.space.reason

    def fid(idx: list[int]):
        if isinstance(s.space, metrics.Unavailable):
            return s.space
        return metrics.frechet_distance(images[idx], ref[idx], s.space)

    def summary(idx: list[int]) -> dict:
        rows = [items[i] for i in idx]
        return {"n": len(idx), "fid": _value(fid(idx)),
                "adherence": mean(r.get("adherent") for r in rows),
                "clip_score": mean(r.get("clip_score") for r in rows),
                "psnr": mean(r["psnr"] for r in rows),
                "feature_distance": mean(r.get("feature_distance") for r in rows)}

    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_cat[p.category].append(i)
    overall = summary(list(range(n)))
    if overall["fid"] is None and "fid" not in unavailable:
        unavailable["fid"] = fid(list(range(n))).reason
    overall["by_category"] = {c: summary(idx) for c, idx in sorted(by_cat.items())}
    overall["unavailable"] = unavailable
    return overall, items


def worst(store: Store, run_id: int, per_category: int = 3) -> dict[str, list[dict]]:
    """Each category's worst images of a run: missed attributes first (embedded), then the lowest
    CLIP score, then the lowest PSNR to the teacher."""
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for it in store.eval_items(run_id):
        by_cat[it["category"]].append(it)

    def badness(it: dict):
        return (-(len(it["missed"]) if it["missed"] else 0),
                it["clip_score"] if it["clip_score"] is not None else 0.0,
                it["psnr"] if it["psnr"] is not None else 0.0)

    return {c: sorted(v, key=badness)[:per_category] for c, v in sorted(by_cat.items())}
