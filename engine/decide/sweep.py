"""A sweep: one model, one prompt and seed, a grid of settings (steps x guidance, or steps x cache
threshold), each cell with its image, cost and quality, for a quality-versus-time chart.

Quality per cell: PSNR of its image to the reference (the most steps, first guidance, no cache);
on the embedded domain with n > 0, also adherence on n fresh prompts rendered with the cell's
setting (the judge's GenEval-style score).
"""

from __future__ import annotations

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
from .config import SweepConfig


def _adherence(family: Family, cell: dict, cfg: SweepConfig, judge, store) -> float:
    prompts = sample_prompts(cfg.n, cfg.quality_seed)
    size = family.default_size
    with accelerated(family, cell["cache"], cfg.fp8, steps=cell["steps"], store=store):
        images, _ = sample(family, [p.text for p in prompts], steps=cell["steps"], guidance=cell["guidance"],
                           seeds=[p.seed for p in prompts], height=size, width=size)
    return summarize(prompts, score(judge, images, prompts))["adherence"]


def run_sweep(family: Family, cfg: SweepConfig, *, model_name: str, store=None, progress=None) -> dict:
    """Render every cell; returns {"reference": record, "cells": [{..., "image": PIL image}]}."""
    grid = cfg.cells()
    judge = family.judge() if cfg.n else None  # adherence where the model's domain has a judge
    ref_req = Request(prompt=cfg.prompt, steps=max(cfg.steps), guidance=cfg.guidance[0], seed=cfg.seed,
                      fp8="off")
    ref_req.check()
    ref_image, ref = run(family, ref_req, model_name=model_name, store=store)
    ref_pixels = torch.from_numpy(np.array(ref_image))[None]
    cells = []
    for i, cell in enumerate(grid):
        if progress:
            progress(i, len(grid), cell)
        req = Request(prompt=cfg.prompt, steps=cell["steps"], guidance=cell["guidance"], seed=cfg.seed,
                      cache=cell["cache"], fp8=cfg.fp8)
        image, record = run(family, req, model_name=model_name, store=store)
        pixels = torch.from_numpy(np.array(image))[None]
        record["psnr_ref"] = round(float(psnr_per_image(pixels, ref_pixels)[0]), 2)
        if cfg.n and judge is not None:
            record["adherence"] = _adherence(family, cell, cfg, judge, store)
        cells.append({**record, "image": image})
    return {"reference": ref, "cells": cells}
