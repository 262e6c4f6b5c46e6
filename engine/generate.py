"""One generation as the CLI and the app run it: check the request, sample, save, record."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

from PIL import Image

from .accel.runtime import accelerated
from .errors import UsageError
from .families.base import Family
from .registry import lab_json
from .request import MAX_SEED, Request
from .sampling import sample
from .store import Store


def defaults(family: Family) -> tuple[int, float]:
    """The steps and guidance a model runs at when none are asked for: a lab student's
    "recommended" ones (its lab.json, engine/distill/run.py), else its family's own (for a
    diffusers model, what its pipeline's __call__ does by default)."""
    rec = (lab_json(Path(family.path)).get("recommended") or {}) if family.path is not None else {}
    steps, guidance = rec.get("steps"), rec.get("guidance")  # a student without a guidance input: None
    return (family.default_steps if steps is None else int(steps),
            family.default_guidance if guidance is None else float(guidance))


MAX_SEEDS = 16


def resolved(family: Family, req: Request) -> tuple[Request, int, int]:
    """The request checked, with the model's own steps and guidance where it asks for none, and the
    image size (the family's native one where none is asked for), checked against the family."""
    req.check()
    if req.steps is None or req.guidance is None:
        steps, guidance = defaults(family)
        req = replace(req, steps=steps if req.steps is None else req.steps,
                      guidance=guidance if req.guidance is None else req.guidance)
    h, w = req.height or family.default_size, req.width or family.default_size
    family.check_size(h, w)
    return req, h, w


def run_seeds(family: Family, req: Request, k: int, *, model_name: str, store: Store | None = None,
              callback=None, log=None) -> tuple[list[Image.Image], dict]:
    """One prompt at K seeds (req.seed, req.seed + 1, ...) in one batch: the images and their record
    (NFE per image; seconds for the whole batch). Where a model draws the same image for every seed,
    this shows it at a glance."""
    if not isinstance(k, int) or not 2 <= k <= MAX_SEEDS:
        raise UsageError(f"seeds must be a whole number in 2..{MAX_SEEDS}, got {k}")
    req, h, w = resolved(family, req)
    seeds = [(req.seed + j) % (MAX_SEED + 1) for j in range(k)]
    with accelerated(family, req.cache, req.fp8, steps=req.steps, store=store, log=log) as acc:
        images, m = sample(family, [req.prompt] * k, steps=req.steps, guidance=req.guidance, seeds=seeds,
                           height=h, width=w, callback=callback)
    record = {"model": model_name, "prompt": req.prompt, "steps": req.steps, "guidance": req.guidance,
              "seeds": seeds, "height": h, "width": w, **m.to_json(), "cache": acc.cache, "fp8": acc.fp8,
              "param_mem_mb": acc.param_mem_mb}
    return [Image.fromarray(x.numpy()) for x in images], record


def _sample_one(family: Family, req: Request, h: int, w: int, *, model_name: str, store: Store | None,
                callback, log) -> tuple[Image.Image, dict]:
    """One image of a resolved request and its record, neither saved nor recorded."""
    with accelerated(family, req.cache, req.fp8, steps=req.steps, store=store, log=log) as acc:
        images, m = sample(family, [req.prompt], steps=req.steps, guidance=req.guidance, seeds=[req.seed],
                           height=h, width=w, callback=callback)
    record = {"model": model_name, "prompt": req.prompt, "steps": req.steps, "guidance": req.guidance,
              "seed": req.seed, "height": h, "width": w, **m.to_json(), "cache": acc.cache, "fp8": acc.fp8,
              "param_mem_mb": acc.param_mem_mb}
    return Image.fromarray(images[0].numpy()), record


def _save(store: Store | None, image: Image.Image, record: dict, settings: dict | None = None) -> None:
    """Save the image and record its generation in the store (its row id into record["id"])."""
    if store is None or store.root is None:
        return
    path = store.new_file(".png")
    image.save(path)
    record["id"] = store.record_generation(
        model=record["model"], prompt=record["prompt"], seed=record["seed"], steps=record["steps"],
        guidance=record["guidance"], height=record["height"], width=record["width"],
        settings={"cache": record["cache"], "fp8": record["fp8"], **(settings or {})}, nfe=record["nfe"],
        skipped=record["skipped"], seconds=record["seconds"], peak_mem_mb=record["peak_mem_mb"], image=path.name)


def run(family: Family, req: Request, *, model_name: str, store: Store | None = None,
        callback=None, log=None) -> tuple[Image.Image, dict]:
    """Generate one image. Returns the image and its record (the CLI's JSON line). `log` hears
    of slow one-off work (a cache calibrating itself for this model)."""
    req, h, w = resolved(family, req)
    image, record = _sample_one(family, req, h, w, model_name=model_name, store=store, callback=callback, log=log)
    _save(store, image, record)
    return image, record


MAX_REPEATS = 20


def run_timed(family: Family, req: Request, *, repeats: int = 3, warm_up: bool = True, model_name: str,
              store: Store | None = None, settings: dict | None = None, callback=None,
              log=None) -> tuple[Image.Image, dict]:
    """One image generated `repeats` times at the same seed (the same image each time), after an untimed
    warm-up run when `warm_up` (a model's first run in a process pays one-off costs: kernels chosen,
    memory allocated). The record's `seconds` is the median of the timed runs, with `seconds_min`,
    `seconds_max` and `seconds_each`; it is recorded once, with `settings` added to its settings.
    `callback(k, n)` counts steps over all the runs, the warm-up included."""
    if not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        raise UsageError(f"timed repeats must be a whole number in 1..{MAX_REPEATS}, got {repeats}")
    req, h, w = resolved(family, req)
    runs = repeats + bool(warm_up)
    seconds = []
    for r in range(runs):
        step = None if callback is None else (lambda k, n, r=r: callback(r * n + k, runs * n))
        image, record = _sample_one(family, req, h, w, model_name=model_name, store=store, callback=step,
                                    log=log if r == 0 else None)
        if r >= runs - repeats:
            seconds.append(record["seconds"])
    record.update(seconds=round(statistics.median(seconds), 4), seconds_min=min(seconds), seconds_max=max(seconds),
                  seconds_each=seconds, repeats=repeats, warm_up=bool(warm_up))
    timing = {k: record[k] for k in ("seconds_min", "seconds_max", "repeats", "warm_up")}
    _save(store, image, record, {**timing, **(settings or {})})
    return image, record
