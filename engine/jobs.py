"""Distillation jobs: a recipe plus a status, run in a process of its own.

Life cycle: queued -> running -> succeeded | failed | canceled; a running job whose process died
(killed, machine restarted) is found by `reconcile` and marked interrupted. One job runs at a time
(one device); the rest wait queued and start when it ends. `resume` re-queues a failed, canceled or
interrupted job, which continues from its last checkpoint. A job process is `python -m engine
job-run ID` (or `accelerate launch ... -m engine job-run ID` on several GPUs); a crash in it never
takes the app down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from . import registry
from .distill.recipes import Recipe, order_warning
from .errors import UsageError
from .paths import PACKAGE
from .store import Store

TERMINAL = ("succeeded", "failed", "canceled", "interrupted")
# Job kinds besides distillation: kind -> "module:function", called in the job's process as
# fn(store, job, report, should_stop) with report(round, step, total); it returns a list of names
# for the job's `models` field, and raises to fail (after should_stop() turned true: canceled).
KINDS = {"eval": "engine.evaluate.runs:run_job"}


def job_dir(store: Store, job_id: int) -> Path:
    d = store.root / "jobs" / str(job_id)
    d.mkdir(parents=True, exist_ok=True)
    return d


def log_path(store: Store, job_id: int) -> Path:
    return job_dir(store, job_id) / "log.txt"


NO_GUIDANCE_INPUT = {"sd3": "an SD3 transformer"}  # families whose denoiser has no guidance-embedding input


def validate(recipe: Recipe, store: Store) -> list[str]:
    """Check a recipe before anything starts; returns warnings (UsageError for what is wrong)."""
    recipe.check()
    teacher_path = registry.resolve(recipe.teacher, store, field="teacher")  # unknown teacher -> UsageError
    if recipe.init:
        registry.resolve(recipe.init, store, field="init")
    if recipe.name in registry.BUILTIN:
        raise UsageError(f"name {recipe.name!r} is taken by a built-in model; choose another")
    for job in store.jobs():
        if job["name"] == recipe.name and job["status"] in ("queued", "running"):
            raise UsageError(f"name {recipe.name!r} is being trained by job {job['id']}; choose another")
    if recipe.prompts and not Path(recipe.prompts).is_file():
        raise UsageError(f"prompts: no such file {recipe.prompts!r}")
    family = registry.family_of(teacher_path) if "guidance" in recipe.technique else None
    if family in NO_GUIDANCE_INPUT:
        raise UsageError(f"technique: guidance distillation needs a model that can take the guidance scale as "
                         f"input; {recipe.teacher!r} is {NO_GUIDANCE_INPUT[family]}, "
                         f"which cannot (use technique progressive, or an SD, SDXL or FLUX teacher)")
    w = order_warning(recipe.technique, registry.takes_guidance(teacher_path))
    return [w] if w else []


def submit(store: Store, recipe: Recipe, *, start: bool = True) -> tuple[int, list[str]]:
    """Queue a job for the recipe (validated first); start it if nothing else is running."""
    warnings = validate(recipe, store)
    job_id = store.create_job(technique=recipe.technique, name=recipe.name, teacher=recipe.teacher,
                              recipe=recipe.to_json(), rounds=len(recipe.rounds()))
    if warnings:
        store.update_job(job_id, message=" ".join(warnings))
    if start:
        dispatch(store)
    return job_id, warnings


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):  # exited, not yet reaped
            return False
        return "job-run" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def reconcile(store: Store) -> list[int]:
    """Mark running jobs whose process is gone as interrupted; returns their ids."""
    lost = []
    for job in store.jobs(limit=1000):
        if job["status"] == "running" and job["pid"] and not _alive(job["pid"]):
            if store.set_job_status(job["id"], "interrupted", only_from=("running",),
                                    error="the job's process ended without finishing (killed or crashed)"):
                lost.append(job["id"])
        elif job["status"] == "running" and not job["pid"] and job["started"] and \
                time.time() - _epoch(job["started"]) > 120:
            store.set_job_status(job["id"], "interrupted", only_from=("running",), error="the job never started")
            lost.append(job["id"])
    return lost


def _epoch(iso: str) -> float:
    import datetime as dt
    return dt.datetime.fromisoformat(iso).timestamp()


def dispatch(store: Store, gpus: int | None = None) -> int | None:
    """Start the oldest queued job if none is running; returns its id."""
    reconcile(store)
    job = store.claim_next_job()
    if job is None:
        return None
    gpus = gpus if gpus is not None else _gpu_count()
    cmd = [sys.executable, "-m", "engine", "job-run", str(job["id"]), "--data-dir", str(store.root)]
    if gpus > 1 and job.get("kind", "distill") == "distill":
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus),
               "-m", "engine", "job-run", str(job["id"]), "--data-dir", str(store.root)]
    log = open(log_path(store, job["id"]), "a")
    # The child imports this very engine, from a checkout or an installed wheel alike.
    path = os.pathsep.join(p for p in (str(PACKAGE.parent), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path})
    store.update_job(job["id"], pid=proc.pid)
    return job["id"]


def _gpu_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cancel(store: Store, job_id: int) -> str:
    job = _job(store, job_id)
    if job["status"] == "queued":
        store.set_job_status(job_id, "canceled", only_from=("queued",))
    elif job["status"] == "running":
        if _alive(job["pid"]):
            os.killpg(job["pid"], signal.SIGTERM)  # the process saves nothing more and marks itself canceled
        else:
            store.set_job_status(job_id, "canceled", only_from=("running",))
    else:
        raise UsageError(f"job {job_id} is {job['status']}: only queued or running jobs can be canceled")
    return store.job(job_id)["status"]


def resume(store: Store, job_id: int) -> None:
    reconcile(store)
    job = _job(store, job_id)
    if job["status"] not in ("failed", "canceled", "interrupted"):
        raise UsageError(f"job {job_id} is {job['status']}: only failed, canceled or interrupted jobs resume")
    store.set_job_status(job_id, "queued", only_from=(job["status"],), resume=1, error=None, finished=None)
    dispatch(store)


def _job(store: Store, job_id: int) -> dict:
    job = store.job(job_id)
    if job is None:
        raise UsageError(f"job: no job {job_id}; `python -m engine jobs` lists them")
    return job


def follow(store: Store, job_id: int, out=sys.stderr, poll: float = 1.0) -> dict:
    """Wait for a job to end, printing its progress; returns its final row."""
    last = None
    while True:
        reconcile(store)
        job = store.job(job_id)
        line = (f"job {job_id} {job['status']}: round {min(job['round'] + 1, job['rounds'])}/{job['rounds']} "
                f"step {job['step']}/{job['total']}")
        if line != last:
            print(line, file=out, flush=True)
            last = line
        if job["status"] in TERMINAL:
            return job
        time.sleep(poll)


# -- inside the job's process -------------------------------------------------------------------

def run_job(store: Store, job_id: int) -> int:
    """The body of `python -m engine job-run ID`: run the recipe and record everything."""
    from accelerate import PartialState

    from .distill.run import Hooks, run_recipe
    from .distill.trainer import Stopped

    job = _job(store, job_id)
    if job.get("kind", "distill") != "distill":
        return _run_kind(store, job)
    state = PartialState()
    main = state.is_main_process
    recipe = Recipe.from_json(job["recipe"])
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    if main:
        store.update_job(job_id, pid=os.getpid() if state.num_processes == 1 else os.getppid())

    def report(r: dict) -> None:
        if main:
            store.update_job(job_id, step=r["step"], total=r["total"], round=r["round"])
            store.add_job_metric(job_id, round=r["round"], step=r["step"], loss=r["loss"], lr=r["lr"],
                                 seconds=r["seconds"])
            print(f"round {r['round'] + 1} step {r['step']}/{r['total']} loss {r['loss']:.5f} lr {r['lr']:.2e}",
                  flush=True)

    def round_done(r: dict) -> None:
        models = json.loads(store.job(job_id)["models"] or "[]") + [r["model"]]
        store.update_job(job_id, models=models, round=r["round"] + 1)
        if "eval" in r:
            e = r["eval"]
            store.add_job_eval(job_id, round=r["round"], model=r["model"], steps=e["steps"], guidance=e["guidance"],
                               adherence=e["adherence"], by_category=e["by_category"], n=e["n"])

    done = len(json.loads(job["models"] or "[]")) if job["resume"] else 0
    hooks = Hooks(report=report, round_done=round_done, log=lambda m: print(m, flush=True),
                  should_stop=lambda: stop["flag"])
    return _conclude(store, job_id, lambda: run_recipe(recipe, store, job_dir(store, job_id), hooks, start_round=done),
                     stopped=lambda e: isinstance(e, Stopped), main=main, announce="registered")


def _conclude(store: Store, job_id: int, body: Callable[[], list[str]], *, stopped: Callable[[Exception], bool],
              main: bool = True, announce: str | None = None, **finished) -> int:
    """Run a job's body and record how it ended: succeeded (with the names it returned), canceled
    (it stopped on request) or failed (the error's first line; the traceback goes to the log);
    then start the next queued job. Only the main process of several writes. Returns the exit code."""
    try:
        names = body()
    except Exception as e:  # noqa: BLE001 - any failure is recorded on the job, with its traceback in the log
        if stopped(e):
            if main:
                store.set_job_status(job_id, "canceled")
                print("canceled", flush=True)
            code = 0
        else:
            traceback.print_exc()
            if main:
                store.set_job_status(job_id, "failed", error=f"{type(e).__name__}: {e}".splitlines()[0][:500])
            code = 1
    else:
        if main:
            store.set_job_status(job_id, "succeeded", models=names, **finished)
            if announce:
                print(f"{announce}: " + ", ".join(names), flush=True)
        code = 0
    if main:
        dispatch(store)
    return code


def _run_kind(store: Store, job: dict) -> int:
    """A job of a kind in KINDS, in this (single) process: status, progress and cancel as for distillation."""
    import importlib

    job_id = job["id"]
    if job["kind"] not in KINDS:
        store.set_job_status(job_id, "failed", error=f"unknown job kind {job['kind']!r}")
        return 1
    module, _, fn = KINDS[job["kind"]].partition(":")
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    store.update_job(job_id, pid=os.getpid())

    def report(round_: int, step: int, total: int) -> None:
        store.update_job(job_id, round=round_, step=step, total=total)

    body = getattr(importlib.import_module(module), fn)
    return _conclude(store, job_id, lambda: body(store, job, report, lambda: stop["flag"]),
                     stopped=lambda e: stop["flag"], round=job["rounds"])
