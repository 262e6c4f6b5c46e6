"""Jobs: long work of any kind (a distillation, an evaluation) in a process of its own.

Life cycle: queued -> running -> succeeded | failed | canceled; a running job whose process died
(killed, machine restarted) is found by `reconcile` and marked interrupted. One job runs at a time
(one device); the rest wait queued and start when it ends. `resume` re-queues a failed, canceled or
interrupted job, which continues where its body left off. A crash in a job never takes the app down.

The runner knows no kind. `submit(store, kind, payload, ...)` queues a job; its process is
`python -m engine job-run ID` (under `accelerate launch` on several GPUs), which calls
`run(store, job_id, body)` with its kind's body (engine/distill/job.py, engine/evaluate/job.py).
A body takes a `Context`: it reports progress in parts (rounds, settings) of steps, raises
`Stopped` when a cancel arrives, and returns the names of the models it made or scored.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .paths import PACKAGE
from .store import JOB_STATES, Store

ACTIVE = ("queued", "running")
TERMINAL = tuple(s for s in JOB_STATES if s not in ACTIVE)
RESUMABLE = ("failed", "canceled", "interrupted")
ENV_FILE = "env.json"  # variables (an API key) for the job's process only: beside the job, never in the database


class Stopped(Exception):
    """The job was asked to stop (canceled); a body raises it where it can stop cleanly."""


@dataclass
class Context:
    """What a job's body gets: its job row and store, progress reporting, and the cancel flag."""
    store: Store
    job: dict
    is_main: bool = True  # several processes run one job under `accelerate launch`: only the main one writes
    stop_flag: dict = field(default_factory=lambda: {"stop": False})

    pace: dict = field(default_factory=dict)  # the clock of the current part: its first step and when

    @property
    def id(self) -> int:
        return self.job["id"]

    @property
    def work_dir(self) -> Path:
        return job_dir(self.store, self.id)

    def report(self, part: int, step: int, total: int, **metrics: float) -> None:
        """Progress: step `step` of `total` in part `part` (0-based); metrics (loss, lr, ...) are kept
        as a point of the job's curve."""
        if not self.is_main:
            return
        now = time.monotonic()
        if self.pace.get("part") != part or step < self.pace["step"]:
            self.pace = {"part": part, "step": step, "time": now}
        # a report ends a phase, except a cancel's: that one stands until the job has stopped
        fields: dict = {"part": part, "step": step, "total": total, "phase": "canceling" if self.stopping() else None}
        elapsed, done = now - self.pace["time"], step - self.pace["step"]
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts_left = max(0, (self.job["parts"] or 1) - part - 1)  # later parts assumed as long as this one
            fields.update(rate=rate, eta=(total - step + parts_left * total) / rate)
        fields.update(_device_use())
        self.store.update_job(self.id, **fields)
        if metrics:
            self.store.add_job_metric(self.id, round=part, step=step, **metrics)

    def phase(self, text: str) -> None:
        """What the job is doing between steps ("loading the teacher"), shown until the next report."""
        if self.is_main:
            self.store.update_job(self.id, phase=text)
        self.log(text)

    def part_done(self, part: int, models: list[str]) -> None:
        """Part `part` finished and made or scored `models` (kept on the job as they come)."""
        if self.is_main:
            done = (self.store.job(self.id)["models"] or []) + models
            self.store.update_job(self.id, models=done, part=part + 1)

    def stopping(self) -> bool:
        return self.stop_flag["stop"]

    def check_stop(self) -> None:
        if self.stopping():
            raise Stopped("stopped")

    def log(self, message: str) -> None:
        print(message, flush=True)


Body = Callable[[Context], list[str]]


def _device_use() -> dict:
    """This process's peak GPU memory (MiB) and the GPU's utilisation (%), where there is a GPU (and,
    for the utilisation, NVML); nothing on a CPU. Read only if the job has imported torch."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    out = {"device_mem_mb": torch.cuda.max_memory_allocated() / 2**20}
    try:
        out["device_util"] = float(torch.cuda.utilization())
    except Exception:  # no NVML: memory alone
        pass
    return out


def job_dir(store: Store, job_id: int) -> Path:
    d = store.root / "jobs" / str(job_id)
    d.mkdir(parents=True, exist_ok=True)
    return d


def log_path(store: Store, job_id: int) -> Path:
    return job_dir(store, job_id) / "log.txt"


def progress(job: dict) -> tuple[float, str]:
    """How far a job is, 0..1, and in words: 'round 2/4, step 150/300, 3.2 step/s, 1:05 left'; a
    running job between steps says what it is doing ('starting: loading the teacher')."""
    parts = max(1, job["parts"] or 1)
    done = min(job["part"], parts)
    within = job["step"] / job["total"] if job["total"] and done < parts else 0.0
    fraction = 1.0 if job["status"] == "succeeded" else min(1.0, (done + within) / parts)
    text = f"{job['part_unit']} {min(done + 1, parts)}/{parts}, {job['step_unit']} {job['step']}/{job['total']}"
    if job["status"] == "running":
        if not job["total"] and not job.get("phase"):
            text = "starting: its process is loading"
        elif job.get("phase"):
            text = f"{job['phase']} · {text}" if job["total"] else job["phase"]
        if job.get("rate") and job["total"]:
            text += f", {job['rate']:.3g} {job['step_unit']}/s"
        if job.get("eta") is not None and job["total"]:
            text += f", {clock(job['eta'])} left"
    elif job["status"] == "queued":
        text = "queued: starts when the running job ends"
    return fraction, text


def clock(seconds: float) -> str:
    """Seconds as 'm:ss' or 'h:mm:ss'."""
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def elapsed(job: dict) -> float | None:
    """Seconds since the job (last) started, to its end if it ended."""
    if not job.get("started"):
        return None
    start = dt.datetime.fromisoformat(job["started"])
    end = dt.datetime.fromisoformat(job["finished"]) if job.get("finished") and job["status"] in TERMINAL \
        else dt.datetime.now(dt.timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (end - start).total_seconds())


def submit(store: Store, kind: str, payload: dict | list, *, name: str, label: str, parts: int,
           units: tuple[str, str] = ("round", "step"), message: str | None = None, env: dict | None = None,
           start: bool = True, launch_config: str | None = None) -> int:
    """Queue a job of `kind` (its body reads `payload`); start it if nothing else is running.
    `env` (e.g. an API key) reaches the job's process alone: it is kept beside the job, readable by
    this user only, until the job succeeds. `launch_config`: an accelerate config file the job is
    launched with, as given (`accelerate launch --config_file`: processes, FSDP, ...)."""
    job_id = store.create_job(kind, name=name, label=label, payload=payload, parts=parts,
                              part_unit=units[0], step_unit=units[1], message=message, launch_config=launch_config)
    if env:
        path = job_dir(store, job_id) / ENV_FILE
        path.touch(mode=0o600)
        path.write_text(json.dumps(env))
    if start:
        dispatch(store)
    return job_id


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
    """Mark running jobs whose process is gone as interrupted; returns their ids. When the
    database cannot be written (a full disk, a read-only copy) they are still returned, to be shown
    as interrupted, and marked by a later call."""
    lost = []
    here = socket.gethostname()
    for job in store.jobs(limit=1000):
        if job["status"] != "running" or (job.get("host") and job["host"] != here):
            continue  # a job on another machine (a cluster's) is its own launcher's to judge
        if job["pid"] and not _alive(job["pid"]):
            error = "the job's process ended without finishing (killed or crashed)"
        elif not job["pid"] and job["started"] and \
                time.time() - dt.datetime.fromisoformat(job["started"]).timestamp() > 120:
            error = "the job never started"
        else:
            continue
        try:
            if store.set_job_status(job["id"], "interrupted", only_from=("running",), error=error):
                lost.append(job["id"])
        except UsageError:
            lost.append(job["id"])
    return lost


def dispatch(store: Store, gpus: int | None = None) -> int | None:
    """Start the oldest queued job if none is running; returns its id."""
    reconcile(store)
    job = store.claim_next_job()
    if job is None:
        return None
    gpus = gpus if gpus is not None else _gpu_count()
    args = ["-m", "engine", "job-run", str(job["id"]), "--data-dir", str(store.root)]
    if job.get("launch_config"):
        launcher = ["-m", "accelerate.commands.launch", "--config_file", job["launch_config"]]
    else:
        launcher = ["-m", "accelerate.commands.launch", "--num_processes", str(gpus)] if gpus > 1 else []
    env_file = job_dir(store, job["id"]) / ENV_FILE
    secrets = json.loads(env_file.read_text()) if env_file.exists() else {}
    # The child imports this very engine, from a checkout or an installed wheel alike.
    path = os.pathsep.join(p for p in (str(PACKAGE.parent), os.environ.get("PYTHONPATH")) if p)
    with open(log_path(store, job["id"]), "a") as log:
        proc = subprocess.Popen([sys.executable, *launcher, *args], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**os.environ, **secrets, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path})
    store.update_job(job["id"], pid=proc.pid)
    return job["id"]


def _gpu_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _job(store: Store, job_id: int) -> dict:
    job = store.job(job_id)
    if job is None:
        raise UsageError(f"job: no job {job_id}; `python -m engine jobs` lists them")
    return job


def cancel(store: Store, job_id: int) -> str:
    """Cancel a queued or running job; returns its status."""
    job = _job(store, job_id)
    if job["status"] == "queued":
        store.set_job_status(job_id, "canceled", only_from=("queued",))
    elif job["status"] == "running":
        if _alive(job["pid"]):
            store.update_job(job_id, phase="canceling")  # shown at once; the body stops at its next check
            os.killpg(job["pid"], signal.SIGTERM)  # and the job is marked canceled
        else:
            store.set_job_status(job_id, "canceled", only_from=("running",))
    else:
        raise UsageError(f"job {job_id} is {job['status']}: only queued or running jobs can be canceled")
    return store.job(job_id)["status"]


def resume(store: Store, job_id: int) -> None:
    """Queue a failed, canceled or interrupted job again; its body continues where it left off."""
    reconcile(store)
    job = _job(store, job_id)
    if job["status"] not in RESUMABLE:
        raise UsageError(f"job {job_id} is {job['status']}: only {', '.join(RESUMABLE)} jobs resume")
    store.set_job_status(job_id, "queued", only_from=(job["status"],), resume=1, error=None, finished=None)
    dispatch(store)


def follow(store: Store, job_id: int, out=sys.stderr, poll: float = 1.0) -> dict:
    """Wait for a job to end, printing its progress; returns its final row."""
    last = None
    while True:
        reconcile(store)
        job = store.job(job_id)
        line = f"job {job_id} {job['status']}: {progress(job)[1]}"
        if line != last:
            print(line, file=out, flush=True)
            last = line
        if job["status"] in TERMINAL:
            return job
        time.sleep(poll)


# -- inside the job's process -------------------------------------------------------------------

def process_state():
    """accelerate's PartialState of this process. On a machine without CUDA it is told so: launched
    several at once (`accelerate launch --multi_gpu --num_processes N`, or torchrun), the processes
    then form a gloo group; told nothing, each would think itself alone."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def run(store: Store, job_id: int, body: Body) -> int:
    """The job's process: run its body and record how it ended - succeeded (with the names it
    returned), canceled (it raised Stopped after a cancel) or failed (the error's first line; the
    traceback goes to the log) - then start the next queued job. Returns the exit code."""
    state = process_state()
    ctx = Context(store, _job(store, job_id), is_main=state.is_main_process)
    pid = ctx.job["pid"]
    if ctx.is_main and ctx.job["status"] == "running" and pid not in (None, os.getpid(), os.getppid()) and _alive(pid):
        print(f"job {job_id} is running already (process {pid}): not running it twice", flush=True)
        return 1
    previous = signal.signal(signal.SIGTERM, lambda *_: ctx.stop_flag.update(stop=True))  # `cancel` sends it
    if ctx.is_main:
        # A job run by hand or by a cluster's launcher (`accelerate launch ... -m engine job-run ID`)
        # was queued, not claimed: it runs now.
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        store.set_job_status(job_id, "running", only_from=("queued",), started=now)
        store.update_job(job_id, pid=os.getpid() if state.num_processes == 1 else os.getppid(),
                         processes=state.num_processes, host=socket.gethostname())
    try:
        names = body(ctx)
    except Exception as e:
        if isinstance(e, Stopped) or ctx.stopping():
            status, code, fields = "canceled", 0, {}
            print("canceled", flush=True)
        else:
            traceback.print_exc()
            status, code, fields = "failed", 1, {"error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
    else:
        status, code, fields = "succeeded", 0, {"models": names, "part": ctx.job["parts"]}
        if ctx.is_main:
            print("done: " + ", ".join(names), flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if ctx.is_main:
        try:
            store.set_job_status(job_id, status, **fields)
            if status == "succeeded":
                (job_dir(store, job_id) / ENV_FILE).unlink(missing_ok=True)
            dispatch(store)
        except UsageError as e:  # the database cannot be written: `reconcile` marks the job interrupted
            print(f"the job's end ({status}) could not be recorded: {e}", flush=True)
            code = code or 1
    return code
