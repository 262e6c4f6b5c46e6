"""Bench and sweep as jobs: settings checked before they are queued, then measured in the job's own
process (engine/jobs.py), with progress per row or cell (parts) of images (steps) and a cancel
honoured between images. A bench run is stored as `bench` stores it; a sweep's cells (records and
images) are kept in the job's folder, read back by `sweep_result`."""

from __future__ import annotations

import json

from .. import jobs, registry
from ..errors import UsageError
from ..store import Store
from .config import ROLES, BenchConfig, SweepConfig

BENCH, SWEEP = "bench", "sweep"
SWEEP_FILE = "sweep.json"


def submit_bench(store: Store, cfg: BenchConfig, *, device: str = "auto", dtype: str = "auto",
                 start: bool = True) -> int:
    """Queue a bench run of `cfg` (checked first, the teacher and every picked student resolved)."""
    cfg.check()
    registry.resolve(cfg.model, store)
    for role, name in cfg.students.items():  # a student asked for by name must exist before anything runs
        registry.resolve(name, store, field=f"student {role}")
    payload = {"config": cfg.to_json(), "device": device, "dtype": dtype}
    # parts: the rows (as many as the roles and the speed features, until the job has planned them) and timing
    return jobs.submit(store, BENCH, payload, name=cfg.model, label=f"bench {cfg.model}",
                       parts=len(ROLES) + 8, units=("row", "image"), start=start)


def run_bench(ctx: jobs.Context) -> list[str]:
    """The job's body: every row's quality images, then the timing rounds; the run is stored."""
    from .bench import run

    cfg = BenchConfig.from_json(ctx.job["payload"]["config"])

    def planned(rows) -> None:
        parts = len(rows) + 1  # the last part: the timing rounds over every row
        ctx.job["parts"] = parts
        if ctx.is_main:
            ctx.store.update_job(ctx.id, parts=parts)
        for i, r in enumerate(rows):
            what = r.missing or r.model + (f" ({r.chosen})" if r.chosen else "")
            ctx.log(f"row {i + 1}/{parts}: {r.label}: {what}")
        ctx.log(f"row {parts}/{parts}: timing, {cfg.timing} rounds after a warm-up")

    result = run(cfg, store=ctx.store, device=ctx.job["payload"].get("device", "auto"),
                 dtype=ctx.job["payload"].get("dtype", "auto"), log=ctx.log, progress=ctx.report,
                 check_stop=ctx.check_stop, on_rows=planned)
    ctx.log(f"bench run {result['id']} stored")
    return sorted({r["model"] for r in result["rows"] if r.get("model") and "missing" not in r})


def submit_sweep(store: Store, model: str, cfg: SweepConfig, *, device: str = "auto", dtype: str = "auto",
                 start: bool = True) -> int:
    """Queue a sweep of `model` over `cfg`'s grid (checked first)."""
    cfg.check()
    registry.resolve(model, store)
    cells = len(cfg.cells())
    payload = {"model": model, "config": cfg.to_json(), "device": device, "dtype": dtype}
    return jobs.submit(store, SWEEP, payload, name=model, label=f"sweep {model}: {cells} cells",
                       parts=cells + 1, units=("cell", "image"), start=start)


def run_sweep(ctx: jobs.Context) -> list[str]:
    """The job's body: the reference, then every cell; records and images go to the job's folder."""
    from .sweep import run_sweep as sweep

    payload = ctx.job["payload"]
    cfg = SweepConfig.from_json(payload["config"])
    family = registry.load(payload["model"], store=ctx.store, device=payload.get("device", "auto"),
                           dtype=payload.get("dtype", "auto"))
    result = sweep(family, cfg, model_name=payload["model"], store=ctx.store, progress=ctx.report,
                   check_stop=ctx.check_stop)
    folder = ctx.work_dir
    cells = []
    for i, cell in enumerate(result["cells"]):
        image = cell.pop("image")
        image.save(folder / f"cell{i:02d}.png")
        cells.append({**cell, "image": f"cell{i:02d}.png"})
    out = {"model": payload["model"], "config": cfg.to_json(), "reference": result["reference"], "cells": cells}
    (folder / SWEEP_FILE).write_text(json.dumps(out))
    ctx.log(f"{len(cells)} cells written to {folder}")
    return [payload["model"]]


def sweep_result(store: Store, job_id: int) -> dict:
    """A finished sweep job's result, each cell's "image" an absolute path."""
    job = store.job(job_id)
    if job is None or job["kind"] != SWEEP:
        raise UsageError(f"job {job_id} is not a sweep job")
    file = jobs.job_dir(store, job_id) / SWEEP_FILE
    if job["status"] != "succeeded" or not file.exists():
        raise UsageError(f"sweep job {job_id} is {job['status']}: its cells are there once it has succeeded")
    out = json.loads(file.read_text())
    for cell in out["cells"]:
        cell["image"] = str(file.parent / cell["image"])
    return out
