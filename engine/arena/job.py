"""Preparing arena battles as a job: the settings and prompts checked before they are queued, the
images made in the job's own process with progress, a cancel honoured between batches (and no
half-made battle left behind)."""

from __future__ import annotations

from dataclasses import asdict

from .. import jobs
from ..prompts import Prompt
from ..store import Store
from . import battles
from .settings import PrepareConfig

KIND = "arena"


def submit(store: Store, settings: list[dict], prompts: list[Prompt], cfg: PrepareConfig, *,
           start: bool = True) -> int:
    """Queue the preparation of `cfg.n` battles between `settings` (refused now if it could not run)."""
    settings = battles.check(store, settings, prompts, cfg)
    names = " vs ".join(s["model"] for s in settings)
    payload = {"settings": settings, "prompts": [p.to_json() for p in prompts], "config": asdict(cfg)}
    return jobs.submit(store, KIND, payload, name=names, label=f"arena: {cfg.n} battles, {names}", parts=1,
                       units=("preparation", "image"), start=start)


def run(ctx: jobs.Context) -> list[str]:
    """The job's body."""
    payload = ctx.job["payload"]
    prompts = [Prompt(d["prompt"], seed=d["seed"], category=d.get("category"), stated=d.get("stated") or {})
               for d in payload["prompts"]]
    cfg = PrepareConfig(**payload["config"])

    def progress(done: int, total: int) -> None:
        ctx.report(0, done, total)
        ctx.check_stop()

    ctx.phase("loading the first model")
    rows = battles.prepare(ctx.store, payload["settings"], prompts, cfg, progress=progress)
    ctx.log(f"prepared {len(rows)} battles; {len(ctx.store.battles())} in all")
    return [s["model"] for s in payload["settings"]]
