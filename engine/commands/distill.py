"""Distillation from the command line: start a job (its flags are the recipe's fields), list jobs,
resume or cancel one, and the body of a job's own process."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..distill.recipes import TECHNIQUES, from_inputs
from ..errors import UsageError
from .args import DATA_DIR, Outcome, arg, command, int_in, number, open_store, say

# Flags left out stay out of the namespace, so the recipe's own defaults are the only ones.
UNSET = {"argument_default": argparse.SUPPRESS}


@command("distill", "start a distillation job (guidance, progressive, both, consistency or dmd)",
         arg("technique", choices=[*TECHNIQUES, "both"]),
         arg("--teacher", default="embedded"),
         arg("--name", required=True, help="the student's model name"),
         arg("--train-steps", type=int_in(1, 10**6), help="optimisation steps per round"),
         arg("--lr", type=number),
         arg("--warmup", type=int_in(0, 10**6)),
         arg("--batch-size", type=int_in(1, 65536)),
         arg("--guidance-min", type=number),
         arg("--guidance-max", type=number),
         arg("--teacher-steps", type=int_in(1, 4096), help="guidance: steps of the teacher trajectories trained on"),
         arg("--from-steps", type=int_in(1, 4096)),
         arg("--to-steps", type=int_in(1, 4096)),
         arg("--steps", type=int_in(1, 64), dest="student_steps",
             help="consistency: the steps its student samples at (default 4); dmd: the generator's steps"),
         arg("--target-ema", type=number, help="consistency: EMA decay of the target network (default 0.95)"),
         arg("--huber-c", type=number, help="consistency: pseudo-Huber c per sqrt(dimension) (default 0.001)"),
         arg("--real-guidance", type=number, help="dmd: guidance scale of the teacher's score (default 5)"),
         arg("--fake-updates", type=int_in(1, 100),
             help="dmd: fake-score updates per generator update (default 5)"),
         arg("--fake-lr", type=number, help="dmd: the fake score's learning rate (default: --lr)"),
         arg("--gan-weight", type=number,
             help="dmd: weight of the GAN term on the fake score's features, the teacher's samples as real "
                  "(default 0: off; DMD2 uses about 0.003-0.01)"),
         arg("--lora-rank", type=int, help="train a LoRA student of this rank"),
         arg("--lora-alpha", type=number),
         arg("--lora-save", choices=["merged", "adapter"]),
         arg("--ema", type=number, help="EMA decay of the student (default 0.995; 0: none)"),
         arg("--checkpoint-every", type=int_in(1, 10**7)),
         arg("--sample-every", type=int_in(0, 10**7),
             help="the student's images at 4 fixed seeds every N steps, shown beside the loss (default 100; 0: none)"),
         arg("--eval-n", type=int_in(0, 100000),
             help="embedded domain: prompts scored for adherence after every round"),
         arg("--prompts", help="training prompts, one per line (default: the model's domain)"),
         arg("--init", help="start the student from this model's weights (train a student longer)"),
         arg("--mixed-precision", help="auto, no, bf16, fp16"),
         arg("--student-prediction", help="progressive: auto (an eps-predicting UNet's students predict v) or keep"),
         arg("--on-policy", type=number,
             help="fraction 0..1 of training walkers that follow the student's own steps (default 0)"),
         arg("--gradient-checkpointing", action="store_true",
             help="recompute the student's activations in the backward: less memory, slower steps"),
         arg("--seed", type=int_in(0, 2**31 - 1)),
         arg("--plan", action="store_true", default=False,
             help="print the job's memory plan (JSON) against the device, and start nothing"),
         arg("--device-memory", type=number, default=None,
             help="with --plan or at submit: plan against this many GiB instead of this machine's device"),
         arg("--detach", action="store_true", default=False, help="start the job and return at once"),
         arg("--accelerate-config", default=None, metavar="FILE",
             help="launch the job with this accelerate config file, as given (processes, machines, FSDP, ...)"),
         arg("--queue", action="store_true", default=False,
             help="create the job and start nothing here: run it with your own launcher, "
                  "`accelerate launch [...] -m engine job-run ID --data-dir DIR` (a cluster's)"),
         arg("--replace", action="store_true", default=False,
             help="let the job's students take names registered already (the old models are no longer named)"),
         arg("--data-dir", default=None),
         **UNSET)
def distill(args) -> dict:
    fields = {k: v for k, v in vars(args).items()
              if k not in ("handler", "command", "detach", "data_dir", "replace", "plan", "device_memory", "queue",
                          "accelerate_config")}
    recipe = from_inputs(fields)
    recipe.check()
    config = None
    if args.accelerate_config is not None:
        config = Path(args.accelerate_config).expanduser().absolute()
        if not config.is_file() or config.suffix not in (".yaml", ".yml", ".json"):
            raise UsageError(f"--accelerate-config must be an accelerate config file (.yaml or .json), "
                             f"got {args.accelerate_config!r}")
        config = str(config)
    memory = None if args.device_memory is None else int(args.device_memory * 2**30)
    if memory is not None and memory <= 0:
        raise UsageError(f"--device-memory must be a positive number of GiB, got {args.device_memory:g}")
    from ..distill import job as distill_job
    from ..jobs import log_path

    store = open_store(args)
    if args.plan:
        return distill_job.memory_plan(store, recipe, device_bytes=memory).to_json()
    job_id, warnings = distill_job.submit(store, recipe, replace=args.replace, device_bytes=memory,
                                          start=not args.queue, launch_config=config)
    for w in warnings:
        say(w)
    if args.queue:
        say(f"job {job_id} created; run it with: accelerate launch [--num_processes N ...] -m engine job-run "
            f"{job_id} --data-dir {store.root}")
        return {"job": job_id, "status": store.job(job_id)["status"], "models": []}
    say(f"job {job_id} queued: {recipe.technique} of {recipe.teacher} -> {recipe.name} "
        f"(log: {log_path(store, job_id)})")
    return job_result(store, job_id, args.detach)


def job_result(store, job_id: int, detach: bool) -> dict | Outcome:
    """The job's row as the command prints it, once it has ended (at once with `detach`); a job
    that ended otherwise than succeeded makes the command exit with 1."""
    from .. import jobs

    job = store.job(job_id) if detach else jobs.follow(store, job_id)
    out = {"job": job_id, "status": job["status"], "models": job["models"] or []}
    if job["error"]:
        out["error"] = job["error"]
    return out if detach or job["status"] == "succeeded" else Outcome(out, 1)


@command("jobs", "list jobs (distillation and evaluation)", DATA_DIR)
def list_jobs(args) -> str:
    from .. import jobs

    store = open_store(args)
    lost = set(jobs.reconcile(store))  # shown as interrupted even where that cannot be written yet
    lines = [f"{'id':>4}  {'status':<11} {'kind':<8} {'what':<52} progress"]
    for j in store.jobs():
        status = "interrupted" if j["id"] in lost else j["status"]
        lines.append(f"{j['id']:>4}  {status:<11} {j['kind']:<8} {j['label']:<52} {jobs.progress(j)[1]}")
    return "\n".join(lines)


@command("resume", "continue a failed, canceled or interrupted job from its last checkpoint",
         arg("job", type=int_in(1, 2**62)), arg("--detach", action="store_true"), DATA_DIR)
def resume(args) -> dict:
    from .. import jobs

    store = open_store(args)
    jobs.resume(store, args.job)
    say(f"job {args.job} resumed from its last checkpoint")
    return job_result(store, args.job, args.detach)


@command("cancel", "cancel a queued or running job", arg("job", type=int_in(1, 2**62)), DATA_DIR)
def cancel(args) -> dict:
    from .. import jobs

    return {"job": args.job, "status": jobs.cancel(open_store(args), args.job)}


@command("job-run", argparse.SUPPRESS, arg("job", type=int), DATA_DIR)
def job_run(args) -> None:
    """The body of a job's own process: its kind's body, run by the kind-agnostic runner."""
    import importlib

    from .. import jobs

    store = open_store(args)
    job = store.job(args.job)
    if job is not None and job["kind"] not in JOB_BODIES:
        store.set_job_status(args.job, "failed", error=f"unknown job kind {job['kind']!r}")
        raise SystemExit(1)
    body = None
    if job is not None:
        module, _, name = JOB_BODIES[job["kind"]].partition(":")
        body = getattr(importlib.import_module(module), name)
    raise SystemExit(jobs.run(store, args.job, body))


# Each kind of job and its body (imported in the job's process alone).
JOB_BODIES = {"distill": "engine.distill.job:run", "eval": "engine.evaluate.job:run",
              "bench": "engine.decide.job:run_bench", "sweep": "engine.decide.job:run_sweep",
              "arena": "engine.arena.job:run"}


