"""The decision table from the command line: bench (every technique on one model and machine),
sweep (one prompt over a grid of settings) and calibrate (what a cache needs for a model)."""

from __future__ import annotations

import math
from pathlib import Path

from ..accel.options import CALIBRATED
from ..decide.config import ROLES, BenchConfig, SweepConfig
from ..errors import UsageError
from ..request import check_guidance
from .args import COMMON, SEED, STEPS, arg, command, int_in, number, open_store, say

TIMING_THREADS = arg("--threads", type=int_in(0, 1024), default=1,
                     help="torch threads on a CPU while it runs (default 1: steady timings on a shared CPU; "
                          "0: torch's own)")
QUEUE = arg("--queue", action="store_true",
            help="run it as a job in the background (`jobs` lists it, `cancel` stops it); prints the job at once")


@command("bench", "the decision table for a model: speed, memory and quality of each technique",
         arg("--model", default="embedded"),
         arg("--steps", type=STEPS, default=50, help="the teacher's sampling steps"),
         arg("--guidance", type=number, default=5.0),
         arg("--n", type=int_in(1, 100000), default=60, help="prompts scored for quality per row"),
         arg("--timing", type=int_in(1, 1000), default=5,
             help="timed generations per row after an untimed warm-up (median and its interval)"),
         arg("--timing-batch", type=int_in(1, 4096), default=[1], nargs="+",
             help="images per timed generation: 1 measures latency, more measures throughput per image; "
                  "several (e.g. 1 16) time each row at each size in the same run"),
         arg("--seed", type=SEED, default=0),
         arg("--batch-size", type=int_in(1, 4096), default=30),
         arg("--thresholds", type=number, nargs="+", default=None,
             help="cache thresholds (default: the calibrated one and twice it)"),
         arg("--student", action="append", default=[], metavar="ROLE=NAME",
             help=f"use this model for a row: {', '.join(ROLES)} (repeatable)"),
         arg("--diversity", type=int_in(0, 100000), default=0,
             help="embedded domain: prompts whose seeds score each row's diversity (default 0: no diversity column)"),
         arg("--diversity-k", type=int_in(2, 64), default=8, help="seeds per prompt for diversity"),
         arg("--json", action="store_true", help="print JSON instead of Markdown"),
         TIMING_THREADS, QUEUE,
         *COMMON)
def bench(args):
    students = dict(item.partition("=")[::2] for item in args.student)  # ROLE=NAME; BenchConfig checks them
    timing_batch = tuple(args.timing_batch) if len(args.timing_batch) > 1 else args.timing_batch[0]
    cfg = BenchConfig(model=args.model, steps=args.steps, guidance=args.guidance, n=args.n, timing=args.timing,
                      seed=args.seed, batch_size=args.batch_size, timing_batch=timing_batch,
                      thresholds=tuple(args.thresholds) if args.thresholds else None, students=students,
                      diversity=args.diversity, diversity_k=args.diversity_k, threads=args.threads)
    cfg.check()
    from .. import registry
    from ..decide import job
    from ..decide.bench import markdown, run

    store = open_store(args)
    registry.resolve(cfg.model, store)
    for role, name in students.items():  # a student asked for by name must exist before anything runs
        registry.resolve(name, store, field=f"--student {role}")
    if args.queue:
        return _queued(store, job.submit_bench(store, cfg, device=args.device, dtype=args.dtype))
    result = run(cfg, store=store, device=args.device, dtype=args.dtype, log=say)
    return result if args.json else markdown(result)


@command("sweep", "one prompt over steps x guidance (or x cache threshold): cost and quality",
         arg("--model", default="embedded"),
         arg("--prompt", required=True),
         arg("--seed", type=SEED, default=0),
         arg("--steps", type=STEPS, nargs="+", default=[50, 20, 8]),
         arg("--guidance", type=number, nargs="+", default=[1.0, 5.0]),
         arg("--cache", default="none", help="cache method of every cell"),
         arg("--thresholds", type=number, nargs="+", default=[], help="cache thresholds as the columns"),
         arg("--fp8", default="off"),
         arg("--n", type=int_in(0, 100000), default=0, help="embedded domain: adherence prompts per cell"),
         arg("--timing", type=int_in(1, 20), default=3,
             help="timed images per cell after its recorded (warm-up) image: median and its interval"),
         arg("--out-dir", default=None, help="write each cell's image here"),
         TIMING_THREADS, QUEUE,
         *COMMON)
def sweep(args) -> dict:
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None and not out_dir.is_dir():
        raise UsageError(f"--out-dir: {args.out_dir!r} is not a folder")
    cfg = SweepConfig(prompt=args.prompt, seed=args.seed, steps=tuple(args.steps), guidance=tuple(args.guidance),
                      cache=args.cache, thresholds=tuple(args.thresholds), fp8=args.fp8, n=args.n, timing=args.timing,
                      threads=args.threads)
    cfg.check()
    from .. import registry
    from ..decide import job
    from ..decide.sweep import run_sweep

    store = open_store(args)
    if args.queue:
        return _queued(store, job.submit_sweep(store, args.model, cfg, device=args.device, dtype=args.dtype))
    family = registry.load(args.model, store=store, device=args.device, dtype=args.dtype)
    result = run_sweep(family, cfg, model_name=args.model, store=store)
    cells = []
    for i, cell in enumerate(result["cells"]):
        image = cell.pop("image")
        if out_dir is not None:
            cell["out"] = str(out_dir / f"cell{i:02d}.png")
            image.save(cell["out"])
        cells.append(cell)
    return {"model": args.model, "reference": result["reference"], "cells": cells}


def _queued(store, job_id: int) -> dict:
    from ..jobs import log_path

    say(f"job {job_id} queued (log: {log_path(store, job_id)}); `python -m engine jobs` follows it")
    return {"job": job_id, "status": store.job(job_id)["status"]}


@command("calibrate", "calibrate a cache for a model (TeaCache: polynomial and threshold; MagCache: ratios)",
         arg("--model", default="embedded"),
         arg("--method", default="teacache", choices=CALIBRATED),
         arg("--prompts", type=int_in(1, 1000), default=4),
         arg("--steps", type=int_in(2, 1000), default=50),
         arg("--guidance", type=number, default=5.0),
         arg("--target-psnr", type=number, default=30.0, help="dB to the uncached images the threshold keeps"),
         *COMMON)
def calibrate(args) -> dict:
    check_guidance(args.guidance, "--guidance")
    if not math.isfinite(args.target_psnr) or not 0 < args.target_psnr <= 100:  # a stored calibration stays
        raise UsageError(f"--target-psnr must be a number of dB in (0, 100], got {args.target_psnr}")
    from .. import registry
    from ..accel.calibrate import CALIBRATORS, CalibrationConfig
    from ..accel.runtime import supported_caches

    store = open_store(args)
    family = registry.load(args.model, store=store, device=args.device, dtype=args.dtype)
    if args.method not in supported_caches(family):
        raise UsageError(f"--method {args.method}: not supported by {args.model!r} "
                         f"(supported: {', '.join(supported_caches(family))})")
    cfg = CalibrationConfig(prompts=args.prompts, steps=args.steps, guidance=args.guidance,
                            target_psnr=args.target_psnr)
    result = CALIBRATORS[args.method](family, cfg, progress=lambda i, n: say(f"calibration run {i}/~{n}"))
    store.save_calibration(family.identity(), args.method, result)
    return {"model": args.model, **result}
