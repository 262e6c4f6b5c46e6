"""Calibrating a cache for a given model from one run over a few prompts, instead of shipping
hand-fitted numbers.

TeaCache: run the model uncached while recording, for every row and step, the relative L1 change
of the timestep-modulated input (x) and of the output (y); fit y ~ poly(x) (numpy.polyfit, as
TeaCache fits its published coefficients). The rescaled threshold then reads as "accumulated
relative change of the output". Then try thresholds in increasing order and keep the largest
whose images stay within `target_psnr` of the uncached ones: the calibrated threshold.
MagCache: diffusers' own calibration mode measures the per-step residual magnitude ratios.

Both run at a small image side (`CalibrationConfig.size`), not the model's native one: what they
measure (how a change of the modulated input turns into a change of the output, the residual
ratios per step) carries over across sizes, and at 1024 x 1024 the CFG batch of the calibration
prompts would be 16 rows of 4,096 tokens in one forward.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import UsageError
from ..families.base import Family
from ..measure import psnr_per_image
from ..sampling import sample
from .diffusers_cache import DiffusersCacheConfig, _state_managers, apply_diffusers_cache, remove_diffusers_cache
from .teacache import TeaCacheConfig, apply_teacache, remove_teacache

VERSION = 2  # bumped when what a calibration means changes; older stored ones are redone

# Prompts for families without a domain of their own (everything but the embedded world).
GENERIC_PROMPTS = (
    "a photo of a red fox in the snow", "a bowl of ramen on a wooden table, studio light",
    "an astronaut riding a horse on the moon", "a watercolor painting of a lighthouse at dusk",
    "a close-up portrait of an old fisherman", "a neon sign that says OPEN in a rainy street",
    "a cozy living room with a green sofa", "a bicycle leaning against a yellow wall",
)


@dataclass
class CalibrationConfig:
    prompts: int = 8  # calibration prompts (from the model's own domain where it has one)
    steps: int = 50  # sampling steps of the calibration run
    guidance: float = 5.0  # guidance scale of the calibration run
    degree: int = 4  # degree of TeaCache's rescaling polynomial
    seed: int = 1234  # seeds the prompts and their noise
    target_psnr: float = 30.0  # calibrated threshold: the largest one keeping this PSNR (dB) to uncached images
    thresholds: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)  # candidates, tried in order
    size: int = 256  # image side of the calibration runs (the model's own where that is smaller)


def calibration_prompts(family: Family, cfg: CalibrationConfig) -> list[str]:
    try:
        return family.training_prompts(random.Random(cfg.seed), cfg.prompts)
    except (UsageError, NotImplementedError, AttributeError):
        return [GENERIC_PROMPTS[i % len(GENERIC_PROMPTS)] for i in range(cfg.prompts)]


def calibration_size(family: Family, cfg: CalibrationConfig) -> int:
    """The image side calibration runs at: `cfg.size`, or the model's default side where that is
    smaller, rounded down to a side the model can make."""
    m = getattr(family, "size_multiple", 1)
    side = min(cfg.size, family.default_size)
    side = max(m, side - side % m)
    try:
        family.check_size(side, side)
    except UsageError:  # a model of one size only (the embedded world)
        return family.default_size
    return side


def _run(family: Family, prompts: list[str], cfg: CalibrationConfig):
    size = calibration_size(family, cfg)
    seeds = [cfg.seed + i for i in range(len(prompts))]
    return sample(family, prompts, steps=cfg.steps, guidance=cfg.guidance, seeds=seeds, height=size, width=size)


def fit_polynomial(x: np.ndarray, y: np.ndarray, degree: int) -> list[float]:
    """Least-squares polynomial y ~ poly(x), highest power first."""
    if len(x) <= degree:
        raise UsageError(f"calibration: need more than {degree} (input change, output change) pairs, got {len(x)}; "
                         f"use more steps or prompts")
    return [float(c) for c in np.polyfit(x, y, degree)]


def calibrate_teacache(family: Family, cfg: CalibrationConfig = CalibrationConfig(), progress=None) -> dict:
    """Fit TeaCache's rescaling polynomial and pick its threshold for `family`."""
    prompts = calibration_prompts(family, cfg)
    # 1. record (input change, output change) pairs from an uncached run (threshold 0 skips nothing)
    hook = apply_teacache(family.denoiser, TeaCacheConfig(threshold=0.0))
    hook.record = []
    try:
        reference, _ = _run(family, prompts, cfg)
    finally:
        remove_teacache(family.denoiser)
    x = torch.cat([d for d, _ in hook.record]).numpy()
    y = torch.cat([o for _, o in hook.record]).numpy()
    coefficients = fit_polynomial(x, y, cfg.degree)
    # 2. the largest threshold whose images stay above the target PSNR: a binary search over the
    # candidates, since PSNR falls as the threshold grows
    candidates = sorted(cfg.thresholds)
    sweep, chosen = [], None
    lo, hi = 0, len(candidates) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if progress:
            progress(len(sweep) + 1, max(1, len(candidates).bit_length()))
        apply_teacache(family.denoiser, TeaCacheConfig(threshold=candidates[mid], coefficients=tuple(coefficients)))
        try:
            images, m = _run(family, prompts, cfg)
        finally:
            remove_teacache(family.denoiser)
        row = {"threshold": candidates[mid], "psnr": round(float(psnr_per_image(images, reference).mean()), 2),
               "skipped": m.skipped, "nfe": m.nfe}
        sweep.append(row)
        if row["psnr"] >= cfg.target_psnr:
            chosen, lo = row, mid + 1
        else:
            hi = mid - 1
    if chosen is None:  # even the smallest candidate misses the target: take the smallest
        chosen = min(sweep, key=lambda r: r["threshold"])
    sweep.sort(key=lambda r: r["threshold"])
    return {"method": "teacache", "version": VERSION, "retention": TeaCacheConfig().retention,
            "coefficients": coefficients, "threshold": chosen["threshold"],
            "psnr": chosen["psnr"], "skipped": chosen["skipped"], "sweep": sweep, "pairs": int(len(x)),
            "size": calibration_size(family, cfg), "config": asdict(cfg)}


def calibrate_magcache(family: Family, cfg: CalibrationConfig = CalibrationConfig(), progress=None) -> dict:
    """Measure MagCache's per-step magnitude ratios with diffusers' calibration mode."""
    prompts = calibration_prompts(family, cfg)
    # One step more than the run, so diffusers does not reset (and print) the ratios at its end.
    apply_diffusers_cache(family.denoiser, DiffusersCacheConfig("magcache", steps=cfg.steps + 1, calibrate=True))
    try:
        _run(family, prompts, cfg)
        states = [s for _, sm in _state_managers(family.denoiser) for s in sm._state_cache.values()
                  if getattr(s, "calibration_ratios", None)]
        ratios = np.mean([s.calibration_ratios[:cfg.steps] for s in states], axis=0)
    finally:
        remove_diffusers_cache(family.denoiser)
    return {"method": "magcache", "version": VERSION, "mag_ratios": [round(float(r), 5) for r in ratios],
            "size": calibration_size(family, cfg), "config": asdict(cfg)}


CALIBRATORS = {"teacache": calibrate_teacache, "magcache": calibrate_magcache}
