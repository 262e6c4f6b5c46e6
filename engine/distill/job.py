"""A distillation job: a recipe checked before it is queued, then run in the job's own process
(engine/jobs.py), one round after another, each round's student registered as it finishes."""

from __future__ import annotations

from pathlib import Path

from .. import jobs, registry
from ..errors import UsageError
from ..store import Store
from .recipes import Recipe, order_warning, read_prompts
from .run import Callbacks, plan, run_recipe

KIND = "distill"
NO_GUIDANCE_INPUT = {"sd3": "an SD3 transformer"}  # families whose denoiser has no guidance-embedding input


def memory_plan(store: Store, recipe: Recipe, device_bytes: int | None = None):
    """The job's memory plan (engine/distill/memory.py) on the device it would run on."""
    from . import memory

    recipe.check()
    teacher = registry.resolve(recipe.teacher, store, field="teacher")
    return memory.plan(recipe, teacher, registry.check_complete(teacher, field="teacher"),
                       device_bytes=device_bytes)


def check_fits(recipe: Recipe, teacher: Path, family: str, device_bytes: int | None = None) -> str | None:
    """Refuse, in one line, a job whose plan on the teacher at `teacher` (checked whole, of `family`)
    does not fit its device, saying what would make it fit. A model the planner cannot trace on the
    meta device is not refused: the warning returned says so."""
    from . import memory

    try:
        plan = memory.plan(recipe, teacher, family, device_bytes=device_bytes)
    except UsageError:
        raise
    except Exception as e:  # a denoiser whose forward the meta device cannot run
        return f"warning: no memory plan for this teacher ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    if not plan.fits:
        fix = memory.suggestion(recipe, lambda r: memory.plan(r, teacher, family, device_bytes=plan.device_bytes),
                                plan.device_bytes)
        raise UsageError(f"memory: this job needs {plan.summary()}, more than {memory.HEADROOM:.0%} of it; "
                         + (fix or "no smaller recipe the lab knows of fits (try a smaller teacher or a larger GPU)"))
    return None


def validate(recipe: Recipe, store: Store, replace: bool = False, device_bytes: int | None = None) -> list[str]:
    """Check a recipe before anything starts, its memory plan included; returns warnings
    (UsageError for what is wrong)."""
    recipe.check()
    teacher = registry.resolve(recipe.teacher, store, field="teacher")
    family = registry.check_complete(teacher, field="teacher")
    if recipe.init:
        registry.check_complete(registry.resolve(recipe.init, store, field="init"), field="init")
    if recipe.name in registry.BUILTIN:
        raise UsageError(f"name {recipe.name!r} is taken by a built-in model; choose another")
    for job in store.jobs(kind=KIND):
        if job["name"] == recipe.name and job["status"] in jobs.ACTIVE:
            raise UsageError(f"name {recipe.name!r} is being trained by job {job['id']}; choose another")
    taken = [p.model_name for p in plan(recipe) if store.model(p.model_name) is not None]
    if taken and not replace:
        raise UsageError(f"name: {', '.join(map(repr, taken))} {'is' if len(taken) == 1 else 'are'} registered "
                         f"already; choose another student name, or replace them (distill --replace)")
    if recipe.prompts:
        read_prompts(recipe.prompts)
    guided = registry.takes_guidance(teacher)
    if "guidance" in recipe.technique:
        if family in NO_GUIDANCE_INPUT:
            raise UsageError(f"technique: guidance distillation needs a model that can take the guidance scale as "
                             f"input; {recipe.teacher!r} is {NO_GUIDANCE_INPUT[family]}, "
                             f"which cannot (use technique progressive, or an SD, SDXL or FLUX teacher)")
        if guided:
            raise UsageError(f"teacher {recipe.teacher!r} is already guidance-distilled: use technique progressive")
    if recipe.technique == "consistency" and family in NO_GUIDANCE_INPUT and not guided:
        raise UsageError(f"technique: a consistency student takes the guidance scale as input; {recipe.teacher!r} is "
                         f"{NO_GUIDANCE_INPUT[family]}, which cannot (use technique dmd or progressive)")
    return [w for w in (check_fits(recipe, teacher, family, device_bytes), order_warning(recipe.technique, guided))
            if w]


def submit(store: Store, recipe: Recipe, *, replace: bool = False, start: bool = True,
           device_bytes: int | None = None, launch_config: str | None = None) -> tuple[int, list[str]]:
    """Queue a job for the recipe (validated first, its memory plan against the device or
    `device_bytes`); start it if nothing else is running. The students' names must be free unless `replace`."""
    warnings = validate(recipe, store, replace, device_bytes)
    job_id = jobs.submit(store, KIND, recipe.to_json(), name=recipe.name,
                         label=f"{recipe.technique}: {recipe.teacher} -> {recipe.name}", parts=len(recipe.rounds()),
                         units=("round", "step"), message=" ".join(warnings) or None, start=start,
                         launch_config=launch_config)
    return job_id, warnings


def run(ctx: jobs.Context) -> list[str]:
    """The job's body: the recipe's rounds from the first one not yet done."""
    recipe = Recipe.from_json(ctx.job["payload"])

    def report(r: dict) -> None:
        extra = {"fake_loss": r["fake_loss"]} if "fake_loss" in r else {}  # DMD: the fake score's loss
        ctx.report(r["round"], r["step"], r["total"], loss=r["loss"], lr=r["lr"], seconds=r["seconds"], **extra)
        if ctx.is_main:
            ctx.log(f"round {r['round'] + 1} step {r['step']}/{r['total']} loss {r['loss']:.5f} lr {r['lr']:.2e}"
                    + (f" fake-score loss {extra['fake_loss']:.5f}" if extra else ""))

    def round_done(r: dict) -> None:
        ctx.part_done(r["round"], [r["model"]])
        if "eval" in r:
            ctx.store.add_job_eval(ctx.id, round=r["round"], model=r["model"], **r["eval"])

    done = len(ctx.job["models"] or []) if ctx.job["resume"] else 0
    log = ctx.log if ctx.is_main else (lambda message: None)  # one process speaks for all
    callbacks = Callbacks(report=report, round_done=round_done, log=log, should_stop=ctx.stopping, phase=ctx.phase)
    return run_recipe(recipe, ctx.store, ctx.work_dir, callbacks, start_round=done)
