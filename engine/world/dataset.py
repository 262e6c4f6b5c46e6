"""Render many scenes at once (in worker processes) for training the judge and the teacher."""

from __future__ import annotations

import os
import random
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from .render import render, to_array
from .scene import Scene, sample_scene


def _scene(distribution: str, seed: int, i: int) -> Scene:
    return sample_scene(random.Random(f"{distribution}-{seed}-{i}"), distribution)


def _render_chunk(args: tuple[str, int, int, int, int]) -> tuple[np.ndarray, list[Scene]]:
    distribution, seed, start, stop, size = args
    scenes = [_scene(distribution, seed, i) for i in range(start, stop)]
    return np.stack([to_array(render(s, size)) for s in scenes]), scenes


def render_dataset(n: int, seed: int = 0, distribution: str = "train", size: int = 32,
                   workers: int | None = None) -> tuple[np.ndarray, list[Scene]]:
    """`n` scenes and their images (n, size, size, 3) uint8; the same for the same arguments."""
    workers = workers or min(16, os.cpu_count() or 1)
    chunk = max(1, min(5000, -(-n // workers)))
    jobs = [(distribution, seed, s, min(n, s + chunk), size) for s in range(0, n, chunk)]
    if workers == 1 or len(jobs) == 1:
        parts = [_render_chunk(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_render_chunk, jobs))
    return np.concatenate([p[0] for p in parts]), [s for p in parts for s in p[1]]
