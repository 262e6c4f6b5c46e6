"""Every evaluation image once: images are cached in the lab database by model (its directory and
the time its weights were written), settings (steps, guidance, cache, FP8, size), prompt and seed,
so a teacher's reference images, and any setting evaluated before, are reused. Under `accelerate
launch --num_processes N` the N processes (one a GPU) each generate their share."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from ..accel.runtime import accelerated
from ..families.base import Family
from ..jobs import Stopped
from ..prompts import Prompt
from ..sampling import sample
from ..store import Store

Progress = Callable[[int, int], None]


def processes():
    """accelerate's PartialState when this process is one of several launched together, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from ..jobs import process_state

    return process_state()


def _settings_key(steps: int, guidance: float, cache: str, fp8: str, height: int, width: int) -> str:
    return json.dumps({"steps": steps, "guidance": float(guidance), "cache": cache, "fp8": fp8,
                       "height": height, "width": width}, sort_keys=True)


def images_for(store: Store, family: Family, prompts: list[Prompt], *, steps: int,
               guidance: float, cache: str, fp8: str, height: int, width: int, batch_size: int,
               progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False
               ) -> tuple[torch.Tensor, list[dict]]:
    """uint8 images (N, H, W, 3) for the prompts at their seeds, from the cache or generated (and
    cached), with each image's row (file, nfe, skipped, seconds). `progress(done, total)` counts
    this process's distinct images, those found in the cache as done from the start."""
    key, settings = family.identity(), _settings_key(steps, guidance, cache, fp8, height, width)
    found = store.eval_images(key, settings, [(p.text, p.seed) for p in prompts])
    todo = list({(p.text, p.seed): p for p in prompts if (p.text, p.seed) not in found}.values())
    state = processes()
    if state is not None:  # each process generates its own share; the cache gathers them
        with state.split_between_processes(todo) as share:
            todo = list(share)
    cached = len({(p.text, p.seed) for p in prompts}) - len(todo) if state is None else 0
    if progress:
        progress(cached, cached + len(todo))
    if todo:  # the cache and FP8 mode are switched on once; each sampling call starts a fresh cache state
        with accelerated(family, cache, fp8, steps=steps, store=store):
            for i in range(0, len(todo), batch_size):
                if should_stop():
                    raise Stopped("stopped")
                batch = todo[i:i + batch_size]
                imgs, m = sample(family, [p.text for p in batch], steps=steps, guidance=guidance,
                                 seeds=[p.seed for p in batch], height=height, width=width)
                rows = []
                for p, img in zip(batch, imgs):
                    path = store.new_file(".png", folder="eval")
                    Image.fromarray(img.numpy()).save(path)
                    rows.append({"prompt": p.text, "seed": p.seed, "image": f"eval/{path.name}", "nfe": m.nfe,
                                 "skipped": m.skipped, "seconds": m.seconds / len(batch)})
                store.add_eval_images(key, settings, rows)
                found.update({(r["prompt"], r["seed"]): r for r in rows})
                if progress:
                    progress(cached + i + len(batch), cached + len(todo))
    if state is not None:
        state.wait_for_everyone()
        found = store.eval_images(key, settings, [(p.text, p.seed) for p in prompts])
    rows = [found[(p.text, p.seed)] for p in prompts]
    arr = np.stack([np.asarray(Image.open(store.root / r["image"]).convert("RGB")) for r in rows])
    return torch.from_numpy(arr), rows
