"""One generation as the CLI and the app run it: check the request, sample, save, record."""

from __future__ import annotations

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


def run(family: Family, req: Request, *, model_name: str, store: Store | None = None,
        callback=None, log=None) -> tuple[Image.Image, dict]:
    """Generate one image. Returns the image and its record (the CLI's JSON line). `log` hears
    of slow one-off work (a cache calibrating itself for this model)."""
    req, h, w = resolved(family, req)
    with accelerated(family, req.cache, req.fp8, steps=req.steps, store=store, log=log) as acc:
        images, m = sample(family, [req.prompt], steps=req.steps, guidance=req.guidance, seeds=[req.seed],
                           height=h, width=w, callback=callback)
    image = Image.fromarray(images[0].numpy())
    record = {"model": model_name, "prompt": req.prompt, "steps": req.steps, "guidance": req.guidance,
              "seed": req.seed, "height": h, "width": w, **m.to_json(), "cache": acc.cache, "fp8": acc.fp8,
              "param_mem_mb": acc.param_mem_mb}
    if store is not None and store.root is not None:
        path = store.new_file(".png")
        image.save(path)
        record["id"] = store.record_generation(
            model=model_name, prompt=req.prompt, seed=req.seed, steps=req.steps, guidance=req.guidance,
            height=h, width=w, settings={"cache": acc.cache, "fp8": acc.fp8}, nfe=m.nfe, skipped=m.skipped,
            seconds=m.seconds, peak_mem_mb=m.peak_mem_mb, image=path.name)
    return image, record
