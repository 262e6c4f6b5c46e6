"""An evaluation job: settings checked before they are queued, then evaluated one after another in
the job's own process (engine/jobs.py), each run stored as it finishes."""

from __future__ import annotations

import json

from .. import jobs, registry
from ..errors import UsageError
from ..store import Store
from . import golden
from .config import EvalConfig
from .runs import run as run_eval

KIND = "eval"


def submit(store: Store, configs: list[EvalConfig], *, env: dict | None = None, start: bool = True) -> int:
    """Queue one job that evaluates the settings in order (checked first); start it if idle. `env`
    (the VLM judge's API key) reaches the job's process alone."""
    if not configs:
        raise UsageError("evaluate: give at least one model setting")
    for cfg in configs:
        cfg.check()
        golden.load(cfg.golden)
        registry.resolve(cfg.model, store)
        if cfg.teacher:
            registry.resolve(cfg.teacher, store)
    what = configs[-1].model + (f" and its lineage ({len(configs)} settings)" if len(configs) > 1 else "")
    return jobs.submit(store, KIND, [c.to_json() for c in configs], name=configs[-1].model, label=f"evaluate {what}",
                       parts=len(configs), units=("setting", "image"), env=env, start=start)


def run(ctx: jobs.Context) -> list[str]:
    """The job's body: every setting in turn."""
    configs = [EvalConfig.from_json(d) for d in ctx.job["payload"]]
    done = []
    for i, cfg in enumerate(configs):
        ctx.log(f"evaluating {cfg.model} ({cfg.steps} steps, guidance {cfg.guidance:g}, cache {cfg.cache}, "
                f"fp8 {cfg.fp8})")
        result = run_eval(cfg, ctx.store, progress=lambda s, t, i=i: ctx.report(i, s, t), should_stop=ctx.stopping,
                          job_id=ctx.id, log=ctx.log)
        if "shard" not in result:
            ctx.log(json.dumps({k: result[k] for k in ("model", "n", "fid", "adherence", "clip_score", "psnr")}))
        ctx.part_done(i, [cfg.model])
        done.append(cfg.model)
    return done
