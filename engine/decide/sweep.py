"""A sweep: one model, one prompt and seed, a grid of settings (steps x guidance, or steps x cache
threshold), each cell with its image, cost and quality, for a quality-versus-time chart.

Time per cell: one recorded image (its warm-up), then timed repeats; the median and its interval,
and the speed-up over the reference cell with its interval (timing.py), one torch thread on a CPU.
Quality per cell: PSNR of its image to the reference (the most steps, first guidance, no cache);
on the embedded domain with n > 0, also adherence on n fresh prompts rendered with the cell's
setting (the judge's GenEval-style score).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..accel.runtime import accelerated
from ..evaluate.adherence import score, summarize
from ..families.base import Family
from ..generate import run
from ..measure import psnr_per_image
from ..request import Request
from ..sampling import sample
from ..world import sample_prompts
from . import timing
from .config import SweepConfig


def _adherence(family: Family, cell: dict, cfg: SweepConfig, judge, store) -> float:
    prompts = sample_prompts(cfg.n, cfg.quality_seed)
    size = family.default_size
    with accelerated(family, cell["cache"], cfg.fp8, steps=cell["steps"], store=store):
        images, _ = sample(family, [p.text for p in prompts], steps=cell["steps"], guidance=cell["guidance"],
                           seeds=[p.seed for p in prompts], height=size, width=size)
    return summarize(prompts, score(judge, images, prompts))["adherence"]


def _timed(family: Family, cell: dict, cfg: SweepConfig, store, each) -> list[float]:
    """Seconds of `cfg.timing` more images of the cell's prompt and seed (its first, recorded image was
    the untimed warm-up); `each()` after every image (it may raise to stop)."""
    size = family.default_size
    out = []
    with accelerated(family, cell["cache"], cfg.fp8, steps=cell["steps"], store=store):
        for _ in range(cfg.timing):
            _, m = sample(family, [cfg.prompt], steps=cell["steps"], guidance=cell["guidance"], seeds=[cfg.seed],
                          height=size, width=size)
            out.append(m.seconds)
            each()
    return out


def run_sweep(family: Family, cfg: SweepConfig, *, model_name: str, store=None, progress=None,
              check_stop=None) -> dict:
    """Render every cell; returns {"reference": record, "cells": [{..., "image": PIL image}]}. Each
    cell (the reference first) is one recorded image, which also warms it up, then `cfg.timing` timed
    images: its seconds are their median with the interval of the median, its speed-up over the
    reference likewise (engine/decide/timing.py). `progress(part, image, images)` counts parts
    (0: the reference, then the cells) of images; `check_stop()` runs between images (it may raise)."""
    grid = cfg.cells()
    progress = progress or (lambda part, step, total: None)
    check_stop = check_stop or (lambda: None)
    before = timing.one_thread(family.device, cfg.threads)
    try:
        return _sweep(family, cfg, grid, model_name, store, progress, check_stop)
    finally:
        if before is not None:
            torch.set_num_threads(before)


def _sweep(family, cfg, grid, model_name, store, progress, check_stop) -> dict:
    judge = family.judge() if cfg.n else None  # adherence where the model's domain has a judge
    reference = {"steps": max(cfg.steps), "guidance": cfg.guidance[0], "cache": "none"}
    images = 1 + cfg.timing

    def measure(part: int, cell: dict, quality: bool) -> tuple:
        total = images + (cfg.n if quality else 0)
        done = [0]

        def each():
            done[0] += 1
            progress(part, done[0], total)
            check_stop()
        check_stop()
        progress(part, 0, total)
        req = Request(prompt=cfg.prompt, steps=cell["steps"], guidance=cell["guidance"], seed=cfg.seed,
                      cache=cell["cache"], fp8=cfg.fp8 if part else "off")
        req.check()
        image, record = run(family, req, model_name=model_name, store=store)
        each()
        seconds = _timed(family, {**cell, "fp8": req.fp8}, replace(cfg, fp8=req.fp8), store, each)
        sec, lo, hi = timing.median_interval(seconds)
        record.update(seconds=round(sec, 4), seconds_lo=round(lo, 4), seconds_hi=round(hi, 4), timed=len(seconds))
        if quality:
            record["adherence"] = _adherence(family, cell, cfg, judge, store)
            done[0] += cfg.n
            progress(part, done[0], total)
        return image, record, seconds

    ref_image, ref, ref_seconds = measure(0, reference, False)
    ref_pixels = torch.from_numpy(np.array(ref_image))[None]
    cells = []
    for i, cell in enumerate(grid):
        image, record, seconds = measure(i + 1, cell, bool(cfg.n and judge is not None))
        pixels = torch.from_numpy(np.array(image))[None]
        record["psnr_ref"] = round(float(psnr_per_image(pixels, ref_pixels)[0]), 2)
        up, lo, hi = timing.speedup(ref_seconds, seconds)
        record.update(speedup=round(up, 2), speedup_lo=round(lo, 2), speedup_hi=round(hi, 2))
        cells.append({**record, "image": image})
    return {"reference": ref, "cells": cells}
