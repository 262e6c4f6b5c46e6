"""The one training loop every recipe uses, on accelerate.

accelerate gives device placement, mixed precision, the process group of `accelerate launch`
(the student is prepared as DistributedDataParallel by engine/distill/run.py, which averages the
gradients over processes), and the main-process guard for writing. Checkpoints
hold the trainable weights (safetensors), the optimiser, scheduler and EMA state, and the step,
so a killed job resumes where it was.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from ..jobs import Stopped


@dataclass
class LoopConfig:
    steps: int  # optimisation steps of this round
    lr: float
    warmup: int
    grad_clip: float = 1.0
    ema: float | None = None
    checkpoint_every: int = 100
    log_every: int = 10  # report at least every this many steps ...
    report_seconds: float = 2.0  # ... and whenever this long has passed since the last report
    sample_every: int = 0  # call `sample(step)` every this many steps and at the end (0: never)


# accelerate's mixed precision -> the dtype frozen networks (the teacher, a LoRA student's base) are
# held in (what trains is float32: engine/distill/run.py `make_trainable`)
FROZEN_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "no": "float32"}


def resolve_mixed_precision(mixed_precision: str) -> str:
    """A recipe's mixed precision as accelerate takes it: "auto" is bf16 on CUDA, none on a CPU."""
    if mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return mixed_precision


def make_accelerator(mixed_precision: str = "auto") -> Accelerator:
    mixed_precision = resolve_mixed_precision(mixed_precision)
    # The learning-rate schedule counts optimisation steps: accelerate would otherwise step it once
    # per process per step (a schedule in samples), ending N processes' rounds at 1/N of their steps.
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(),
                       step_scheduler_with_optimizer=False)


def _lr_lambda(cfg: LoopConfig):
    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, cfg.warmup))
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, cfg.steps))))
    return f


def train_loop(acc: Accelerator, module: torch.nn.Module, loss_fn: Callable[[int], torch.Tensor],
               cfg: LoopConfig, ckpt_dir: Path, *, report: Callable[[dict], None] = lambda r: None,
               should_stop: Callable[[], bool] = lambda: False, technique=None,
               sample: Callable[[int], None] | None = None) -> None:
    """Train `module`'s trainable parameters for cfg.steps, resuming from `ckpt_dir` if it holds a
    checkpoint. `loss_fn(step)` builds a batch and returns its loss (inside accelerate's autocast).
    A DistributedDataParallel `module` averages the gradients over the processes. A `technique`
    with state of its own (a consistency target network; DMD's fake score and its optimiser) has it
    checkpointed beside the student's (`state_dict` / `load_state_dict`) and may add `metrics()`
    to each report. `sample(step)` (the student's images, shown beside the loss) runs every
    `cfg.sample_every` steps and after the last."""
    module = acc.unwrap_model(module, keep_fp32_wrapper=True)  # names and checkpoints: the module's own
    params = [p for p in module.parameters() if p.requires_grad]
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    ema = EMAModel(params, decay=cfg.ema, foreach=True) if cfg.ema else None
    opt, sched = acc.prepare(opt, sched)
    start = _load_checkpoint(ckpt_dir, module, names, opt, sched, ema, technique)
    t0, losses = time.time(), []
    last_report = t0
    for step in range(start, cfg.steps):
        if should_stop():
            raise Stopped("stopped")  # the last checkpoint stands
        # 1. loss on a fresh batch of walker states
        with acc.autocast():
            loss = loss_fn(step)
        # 2. backward (DDP averages the gradients over processes), clip, update
        acc.backward(loss)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if ema:
            ema.step(params)
        losses.append(loss.item())
        done = step + 1
        # 3. checkpoint, then report (a job killed in between resumes after what it reported)
        if done % cfg.checkpoint_every == 0 and done < cfg.steps and acc.is_main_process:
            _save_checkpoint(ckpt_dir, done, module, names, opt, sched, ema, technique)
        # the first step reported at once: a curve and a pace from the start
        due = time.time() - last_report >= cfg.report_seconds
        if done == 1 or done % cfg.log_every == 0 or done == cfg.steps or due:
            extra = technique.metrics() if hasattr(technique, "metrics") else {}
            report({"step": done, "total": cfg.steps, "loss": sum(losses) / len(losses),
                    "lr": sched.get_last_lr()[0], "seconds": time.time() - t0, **extra})
            losses, last_report = [], time.time()
        if sample is not None and cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
            sample(done)
    if ema:
        ema.copy_to(params)


def _save_checkpoint(d: Path, step: int, module, names, opt, sched, ema, technique=None) -> None:
    """Write the checkpoint beside the last one, then swap it in: a crash leaves either the old or
    the new one, and a write that fails (a full disk) leaves the old one and takes its partial
    files with it, so they hold no space."""
    tmp = d.with_name(d.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        state = dict(module.named_parameters())
        save_file({n: state[n].detach().float().contiguous().cpu() for n in names}, tmp / "trainable.safetensors")
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "ema": ema.state_dict() if ema else None,
                    "technique": technique.state_dict() if technique is not None else {}}, tmp / "optimizer.pt")
        (tmp / "step.json").write_text(json.dumps({"step": step}))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if d.exists():
        old = d.with_name(d.name + ".old")
        d.rename(old)
        tmp.rename(d)
        shutil.rmtree(old)
    else:
        tmp.rename(d)


def _load_checkpoint(d: Path, module, names, opt, sched, ema, technique=None) -> int:
    if not (d / "step.json").exists():
        return 0
    weights = load_file(d / "trainable.safetensors")
    state = dict(module.named_parameters())
    with torch.no_grad():
        for n in names:
            state[n].copy_(weights[n].to(state[n]))
    rest = torch.load(d / "optimizer.pt", map_location="cpu", weights_only=False)
    opt.load_state_dict(rest["optimizer"])
    sched.load_state_dict(rest["scheduler"])
    if ema and rest["ema"]:
        ema.load_state_dict(rest["ema"])
    if technique is not None:
        technique.load_state_dict(rest.get("technique") or {})
    return json.loads((d / "step.json").read_text())["step"]
