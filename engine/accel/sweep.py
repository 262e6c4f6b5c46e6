"""A sweep: one model, one prompt and seed, a grid of settings (steps x guidance, or steps x cache
threshold), each cell with its image, cost and quality, for a quality-versus-time chart.

Quality per cell: PSNR of its image to the reference (the most steps, first guidance, no cache);
on the embedded domain with n > 0, also adherence on n fresh prompts rendered with the cell's
setting (the judge's GenEval-style score).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UsageError
from ..evaluate.metrics import psnr_per_image as psnr
from ..families.base import Family
from ..generate import Request, run
from . import accelerated, parse_cache

MAX_CELLS = 36


@dataclass
class SweepConfig:
    prompt: str  # the prompt every cell renders
    seed: int = 0
    steps: tuple[int, ...] = (50, 20, 8)  # rows of the grid
    guidance: tuple[float, ...] = (1.0, 5.0)  # columns, unless thresholds are given
    cache: str = "none"  # cache method of every cell; with thresholds, the columns are its thresholds
    thresholds: tuple[float, ...] = ()  # cache thresholds (then guidance uses its first value only)
    fp8: str = "off"  # off | weights | compute, for every cell
    n: int = 0  # embedded domain: prompts scored for adherence per cell (0: PSNR only)
    quality_seed: int = 0  # seeds those prompts

    def cells(self) -> list[dict]:
        method = parse_cache(self.cache).method
        if self.thresholds and method == "none":
            raise UsageError("thresholds need a cache method (teacache, fbcache, ...)")
        if self.thresholds:
            grid = [{"steps": s, "guidance": self.guidance[0], "cache": f"{method}:{th:g}"}
                    for s in self.steps for th in self.thresholds]
        else:
            grid = [{"steps": s, "guidance": g, "cache": self.cache} for s in self.steps for g in self.guidance]
        if not grid:
            raise UsageError("sweep needs at least one steps value and one guidance value")
        if len(grid) > MAX_CELLS:
            raise UsageError(f"sweep has {len(grid)} cells; at most {MAX_CELLS}")
        return grid


def _adherence(family: Family, cell: dict, cfg: SweepConfig, judge, store) -> float:
    from ..adherence import score, summarize
    from ..sampling import sample
    from ..world import sample_prompts

    prompts = sample_prompts(cfg.n, cfg.quality_seed)
    size = family.default_size
    with accelerated(family, cell["cache"], cfg.fp8, steps=cell["steps"], store=store):
        images, _ = sample(family, [p.text for p in prompts], steps=cell["steps"], guidance=cell["guidance"],
                           seeds=[p.seed for p in prompts], height=size, width=size)
    return summarize(prompts, score(judge, images, prompts))["adherence"]


def run_sweep(family: Family, cfg: SweepConfig, *, model_name: str, store=None, judge=None,
              progress=None) -> dict:
    """Render every cell; returns {"reference": record, "cells": [{..., "image": PIL image}]}."""
    grid = cfg.cells()
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
        record["psnr_ref"] = round(float(psnr(pixels, ref_pixels)[0]), 2)
        if cfg.n and judge is not None:
            record["adherence"] = _adherence(family, cell, cfg, judge, store)
        cells.append({**record, "image": image})
    return {"reference": ref, "cells": cells}
