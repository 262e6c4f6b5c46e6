"""Run a recipe's rounds: build each student, train it on teacher walkers, score it, save and
register it. Called inside a job's own process (engine/distill/job.py); reports through callbacks."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import registry
from ..errors import UsageError
from ..evaluate.adherence import evaluate as adherence
from ..families.adapter import merge_lora
from ..families.base import Family
from ..store import Store
from ..world import sample_prompts
from .consistency import ConsistencyRound
from .dmd import DMDRound
from .lora import apply_lora, save_adapter_student
from .recipes import FEW_STEP, Recipe, read_prompts
from .techniques import GuidanceRound, ProgressiveRound, step_to_next
from .trainer import FROZEN_DTYPE, LoopConfig, make_accelerator, train_loop
from .walkers import Walkers

DROP_PROMPT = 0.1  # progressive rounds of a two-pass CFG model also learn the unconditional branch


@dataclass
class Callbacks:
    """How a running recipe talks to the world (the job process writes these to the database)."""
    report: Callable[[dict], None] = lambda r: None  # training progress: step, total, loss, lr
    round_done: Callable[[dict], None] = lambda r: None  # a round's model and evaluation
    log: Callable[[str], None] = print
    should_stop: Callable[[], bool] = lambda: False
    phase: Callable[[str], None] = lambda text: None  # what it does between steps ("loading the teacher")


@dataclass
class Plan:
    """A round with the names it registers."""
    index: int
    kind: str
    model_name: str
    teacher_steps: int = 0
    student_steps: int = 0
    extra: dict = field(default_factory=dict)


def plan(recipe: Recipe) -> list[Plan]:
    rounds = recipe.rounds()
    out = []
    for i, r in enumerate(rounds):
        last = i == len(rounds) - 1
        if r["kind"] in FEW_STEP:
            out.append(Plan(i, r["kind"], recipe.name, student_steps=r["student_steps"]))
        elif r["kind"] == "guidance":
            out.append(Plan(i, "guidance", recipe.name if last else f"{recipe.name}-guidance"))
        else:
            name = recipe.name if last else f"{recipe.name}-r{i + 1}-{r['student_steps']}step"
            out.append(Plan(i, "progressive", name, r["teacher_steps"], r["student_steps"]))
    return out


def prompt_source(recipe: Recipe, family: Family):
    """(rng, n) -> prompts: the recipe's prompt file, or the model's own domain."""
    if recipe.prompts:
        lines = read_prompts(recipe.prompts)
        return lambda rng, n: [rng.choice(lines) for _ in range(n)]
    family.training_prompts(random.Random(0), 1)  # raises a clear error where there is no domain
    return family.training_prompts


def run_recipe(recipe: Recipe, store: Store, work_dir: Path, callbacks: Callbacks = Callbacks(),
               start_round: int = 0) -> list[str]:
    """Run rounds start_round.. of the recipe; returns the registered model names of all rounds."""
    acc = make_accelerator(recipe.mixed_precision)
    device = "cpu" if acc.device.type == "cpu" else str(acc.device)  # several CPU processes: "cpu:N"
    teacher_name = recipe.teacher
    names = []
    for p in plan(recipe):
        if p.index < start_round:  # finished before a resume: its model is registered already
            teacher_name = p.model_name
            names.append(p.model_name)
            continue
        # The teacher is frozen: it is held in the dtype mixed precision computes in (float32 without);
        # what trains is float32 (make_trainable).
        callbacks.phase(f"round {p.index + 1}: loading the teacher {teacher_name}")
        teacher = registry.load(teacher_name, store=store, device=device, dtype=FROZEN_DTYPE[acc.mixed_precision])
        teacher.denoiser.requires_grad_(False)
        callbacks.log(f"round {p.index + 1}: {p.kind} from {teacher_name}"
                      + (f" ({p.teacher_steps} -> {p.student_steps} steps)" if p.kind == "progressive" else "")
                      + (f" ({p.student_steps}-step student)" if p.kind in FEW_STEP else ""))
        student, trainable_new = build_student(p, teacher, recipe)
        if recipe.init and p.index == 0:
            student = _from_init(recipe, store, device, student)
            student.sampler = "consistency" if p.kind in FEW_STEP else "ddim"
        make_trainable(student, recipe, trainable_new)
        callbacks.phase(f"round {p.index + 1}: the teacher's first trajectories")
        technique, walkers = round_technique(p, recipe, teacher, student, acc)
        if isinstance(technique, DMDRound):
            technique.fake.denoiser = distributed(acc, technique.fake.denoiser)
            loss_fn = technique.loss_fn(walkers)
        else:
            loss_fn = round_step(technique, student, walkers, recipe.on_policy, seed=recipe.seed,
                                 part=(acc.process_index, acc.num_processes))

        loop = LoopConfig(steps=recipe.train_steps, lr=recipe.lr, warmup=recipe.warmup, grad_clip=recipe.grad_clip,
                          ema=recipe.ema, checkpoint_every=recipe.checkpoint_every,
                          sample_every=recipe.sample_every if acc.is_main_process else 0)
        # Under `accelerate launch` the student trains as DistributedDataParallel: the family calls the
        # wrapper, so gradients are averaged over the processes in the backward.
        net = student.denoiser
        student.denoiser = distributed(acc, net)
        if acc.num_processes > 1:
            callbacks.log(f"training on {acc.num_processes} processes ({type(student.denoiser).__mro__[1].__name__}), "
                          f"batch {recipe.batch_size} each")
        try:
            train_loop(acc, student.denoiser, loss_fn, loop, work_dir / f"round{p.index}",
                       report=lambda r, i=p.index: callbacks.report({**r, "round": i}),
                       should_stop=callbacks.should_stop, technique=technique,
                       sample=samples_of(p, recipe, teacher, student, net, work_dir / "samples", acc,
                                         callbacks.log))
        finally:
            student.denoiser = acc.unwrap_model(student.denoiser, keep_fp32_wrapper=False) \
                if student.denoiser is not net else net
        student.denoiser.eval().requires_grad_(False)
        if recipe.gradient_checkpointing:
            student.denoiser.disable_gradient_checkpointing()
        if acc.is_main_process:
            callbacks.phase(f"round {p.index + 1}: saving" + (" and scoring" if recipe.eval_n else "") + " the student")
            result = _finish_round(recipe, p, store, student, teacher_name, trainable_new, work_dir, callbacks)
            callbacks.round_done(result)
        acc.wait_for_everyone()
        teacher_name = p.model_name
        names.append(p.model_name)
    return names


SAMPLE_SEEDS = (0, 1, 2, 3)


def samples_of(p: Plan, recipe: Recipe, teacher: Family, student: Family, net: torch.nn.Module, out: Path, acc,
               log: Callable[[str], None] = print):
    """`sample(step)`: the student's images of the same four prompts and seeds, side by side, saved
    as out/round<R>-step<S>.png (what the job's page shows beside the loss). They are drawn under the
    mixed precision the student trains in (its frozen parts are in that dtype). A sample that fails
    (out of memory, say) is logged and skipped: it never ends the training it illustrates."""
    from PIL import Image

    from ..sampling import sample

    prompts = prompt_source(recipe, teacher)(random.Random(0), len(SAMPLE_SEEDS))

    def save(step: int) -> None:
        try:
            draw(step)
        except Exception as e:
            log(f"samples at step {step} skipped: {type(e).__name__}: {str(e).splitlines()[0][:200]}")

    def draw(step: int) -> None:
        steps, guidance = recommended(recipe, p, student)
        view = copy.copy(student)
        view.denoiser = net  # the module itself, not the processes' wrapper
        size = teacher.default_size
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad(), acc.autocast():
                images, _ = sample(view, prompts, steps=steps, guidance=5.0 if guidance is None else guidance,
                                   seeds=list(SAMPLE_SEEDS), height=size, width=size)
        finally:
            net.train(was_training)
        out.mkdir(parents=True, exist_ok=True)
        row = torch.cat(list(images), dim=1)  # (H, 4W, 3)
        Image.fromarray(row.cpu().numpy()).save(out / f"round{p.index + 1}-step{step:07d}.png")

    return save


def round_technique(p: Plan, recipe: Recipe, teacher: Family, student: Family, acc):
    """The round's technique and the walkers that feed it (spread over the walkers' first grid
    points by the technique's own steps before training starts)."""
    size = teacher.default_size
    common = {"prompts": prompt_source(recipe, teacher), "batch": recipe.batch_size, "height": size, "width": size,
              "seed": recipe.seed * 1000 + p.index, "first": acc.process_index * recipe.batch_size}
    if p.kind == "dmd":
        fake, _ = build_student(Plan(p.index, "fake", ""), teacher, recipe)
        make_trainable(fake, recipe, [])
        technique = DMDRound(teacher, student, fake, real_guidance=recipe.real_guidance,
                             fake_updates=recipe.fake_updates, fake_lr=recipe.fake_lr or recipe.lr,
                             grad_clip=recipe.grad_clip, seed=recipe.seed * 1000 + p.index + acc.process_index,
                             gan_weight=recipe.gan_weight)
        walkers = Walkers(teacher, steps=p.student_steps, guidance_range=(recipe.real_guidance,) * 2,
                          jitter=False, **common)
        walkers.warm_up(technique.warm_up_step)
        return technique, walkers
    if p.kind == "consistency":
        technique = ConsistencyRound(teacher, student, target_ema=recipe.target_ema, huber_c=recipe.huber_c)
    else:
        technique = GuidanceRound(teacher) if p.kind == "guidance" else ProgressiveRound(teacher)
    guided = p.kind in ("guidance", "consistency") or teacher.guidance_embedded
    walkers = Walkers(teacher, steps=p.student_steps if p.kind == "progressive" else recipe.teacher_steps,
                      guidance_range=(recipe.guidance_min, recipe.guidance_max) if guided else (1.0, 1.0),
                      jitter=technique.jitter, drop_prompt=0.0 if guided else DROP_PROMPT, **common)
    walkers.warm_up(lambda b: technique.target(b)[1])
    return technique, walkers


def round_step(technique, student: Family, walkers: Walkers, on_policy: float, seed: int = 0,
               part: tuple[int, int] = (0, 1)) -> Callable[[int], torch.Tensor]:
    """The loss of one optimisation step: the teacher's targets at the walkers' states, the student's
    predictions there; then the walkers move on - along the teacher's trajectory, or (a fraction
    `on_policy` of them, drawn afresh each step) by the student's own step, so that the student also
    learns at the states its own errors lead to when it samples. Process `part[0]` of `part[1]`
    takes its slice of one draw over every process's walkers, as one process with them all would."""
    gen = torch.Generator().manual_seed(seed)
    index, processes = part

    def loss_fn(step: int) -> torch.Tensor:
        technique.before_step()
        batch = walkers.current()
        x0_target, z_next = technique.target(batch)
        x0_hat = technique.predict(student, batch)
        loss = technique.loss(student, batch, x0_hat, x0_target)
        if on_policy > 0:
            draw = torch.rand(walkers.batch * processes, generator=gen)
            mine = (draw[index * walkers.batch:(index + 1) * walkers.batch] < on_policy).to(z_next.device)
            z_own = step_to_next(technique.teacher, batch, x0_hat.detach())
            z_next = torch.where(mine.view(-1, *[1] * (z_next.dim() - 1)), z_own, z_next)
        walkers.advance(z_next)
        return loss

    return loss_fn


def distributed(acc, net: torch.nn.Module) -> torch.nn.Module:
    """`net` prepared by accelerate: DistributedDataParallel over the processes of `accelerate
    launch` (the module itself in one process), reading through to the module's own attributes
    (`config`, ...) as the family adapters use them."""
    if acc.num_processes == 1:
        return net
    wrapped = acc.prepare_model(net)
    if wrapped is not net:
        class Through(type(wrapped)):
            def __getattr__(self, name):
                try:
                    return super().__getattr__(name)
                except AttributeError:
                    return getattr(super().__getattr__("module"), name)
        wrapped.__class__ = Through
    return wrapped


def make_trainable(student: Family, recipe: Recipe, new: list[str]) -> list[torch.nn.Parameter]:
    """Switch on what the round trains (a LoRA student: its adapter and the modules it adds; else
    every weight) and the recipe's gradient checkpointing; returns the trainable parameters."""
    if recipe.lora:
        apply_lora(student, recipe.lora, new)
    else:
        student.denoiser.to(torch.float32).requires_grad_(True)
    for p in student.denoiser.parameters():  # trained weights, and the optimiser's state, in float32
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if recipe.gradient_checkpointing:
        student.denoiser.enable_gradient_checkpointing()
    student.denoiser.train()
    return [p for p in student.denoiser.parameters() if p.requires_grad]


def build_student(p: Plan, teacher: Family, recipe: Recipe) -> tuple[Family, list[str]]:
    """The round's student, starting from the teacher, and the names of parameters it adds.
    A LoRA student shares its teacher's weights (one copy of the base in memory). A step round's
    student of an eps-predicting UNet predicts v instead (same schedule, so the
    teacher's trajectories stay valid; the round's loss in x0 space teaches the new reading)."""
    share = recipe.lora is not None  # a LoRA student trains over its teacher's own frozen weights
    if p.kind in ("guidance", "consistency"):
        student = teacher.with_guidance_input(share=share)
        before = {n for n, _ in teacher.denoiser.named_parameters()}
        new = [n for n, _ in student.denoiser.named_parameters() if n not in before]
    elif (p.kind == "progressive" and recipe.student_prediction == "auto"
            and getattr(teacher, "prediction_type", None) == "epsilon" and hasattr(teacher, "with_parameterization")):
        student, new = teacher.with_parameterization("v_prediction", share=share), []
    else:
        student, new = teacher.clone(share=share), []
    student.shares_base = share
    student.sampler = "consistency" if p.kind in FEW_STEP else "ddim"
    return student, new


def _from_init(recipe: Recipe, store: Store, device: str, fresh: Family) -> Family:
    """The first student, from the weights of `recipe.init` (which must have the fresh student's shape)."""
    init = registry.load(recipe.init, store=store, device=device, dtype="float32").clone()
    if init.guidance_embedded != fresh.guidance_embedded:
        raise UsageError(f"init: {recipe.init!r} {'takes' if init.guidance_embedded else 'does not take'} the "
                         f"guidance scale as input, unlike this round's student")
    return init


def recommended(recipe: Recipe, p: Plan, student: Family) -> tuple[int, float | None]:
    """The steps and guidance a round's student is scored at and runs at by default: a step
    student its own steps; a DMD generator its teacher's real guidance where it takes a scale, else
    one pass (1); a student with a guidance input 5 (None: the family's own)."""
    steps = p.student_steps if p.kind in ("progressive", *FEW_STEP) else recipe.eval_steps
    if p.kind == "dmd":
        return steps, recipe.real_guidance if student.guidance_embedded else 1.0
    return steps, 5.0 if student.guidance_embedded else None


def _finish_round(recipe: Recipe, p: Plan, store: Store, student: Family, parent: str, new: list[str],
                  work_dir: Path, callbacks: Callbacks) -> dict:
    steps, guidance = recommended(recipe, p, student)
    meta = {"recipe": recipe.to_json(), "round": p.index, "kind": p.kind, "parent": parent,
            "guidance_range": [recipe.guidance_min, recipe.guidance_max] if student.guidance_embedded else None,
            "recommended": {"steps": steps, "guidance": guidance}, "sampler": student.sampler}
    path = store.new_dir("models")
    if recipe.lora and recipe.lora.save == "adapter":
        base = registry.resolve(recipe.teacher, store)
        if p.index > 0:
            raise UsageError("lora save 'adapter' is for one-round recipes; use save 'merged' for several rounds")
        save_adapter_student(student, path, base, new, meta)
        merge_lora(student)
    else:
        if recipe.lora:
            merge_lora(student)
        student.save(path, extra=meta)
    store.register_model(p.model_name, path, student.name, parent=parent, recipe=recipe.to_json(),
                         round=p.index)
    result = {"round": p.index, "model": p.model_name, "path": str(path)}
    if recipe.eval_n and student.judge() is not None:
        result["eval"] = _evaluate(student, recipe, steps, 5.0 if guidance is None else guidance)
    callbacks.log(f"round {p.index + 1} done: registered {p.model_name}"
              + (f", adherence {result['eval']['adherence']:.3f}" if "eval" in result else ""))
    return result


def _evaluate(student: Family, recipe: Recipe, steps: int, guidance: float) -> dict:
    """The round's student on `eval_n` fresh prompts of its domain, scored by the domain's judge."""
    res = adherence(student, student.judge(), sample_prompts(recipe.eval_n, seed=0), steps=steps,
                    guidance=guidance, batch_size=min(100, recipe.eval_n))
    return {"steps": steps, "guidance": guidance, "adherence": res["adherence"], "by_category": res["by_category"],
            "n": res["n"]}
