"""What each round teaches: the teacher's target at a walker's state, and where the walker goes next.

- Guidance distillation (Meng et al. 2023, stage 1): target x0_w = x0_uncond + s (x0_cond - x0_uncond)
  from the teacher's two passes; the student sees s as an input and answers in one pass.
- Progressive distillation (Salimans & Ho 2022, Algorithm 2): two teacher DDIM steps t -> m -> s,
  and the x0 for which one student step t -> s lands at the same z_s. On a guidance-distilled
  teacher both use the walker's s (Meng et al. stage 2).
Both are learned with the same loss (`round_loss`); `step_to_next` moves a walker by a prediction.
Consistency distillation (engine/distill/consistency.py) has the same shape with its own target and
loss; DMD (engine/distill/dmd.py) trains two networks and builds its own step.
"""

from __future__ import annotations

import torch

from ..families.base import Family
from ..sampling import ddim_step
from .targets import guided_x0_target, teacher_two_steps, two_step_x0_target, weighted_x0_loss
from .walkers import Batch


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def step_to_next(f: Family, b: Batch, x0: torch.Tensor) -> torch.Tensor:
    """One DDIM step of each walker from its t to its t_next, given an x0 prediction."""
    a_t, s_t = f.schedule.alpha_sigma(b.t)
    a_n, s_n = f.schedule.alpha_sigma(b.t_next)
    z = b.z
    return ddim_step(z, x0.to(z.dtype), _bcast(a_t, z), _bcast(s_t, z), _bcast(a_n, z), _bcast(s_n, z))


def guided_x0(teacher: Family, z: torch.Tensor, t: torch.Tensor, b: Batch, s: torch.Tensor) -> torch.Tensor:
    """The teacher's x0 at (z, t) for the batch's prompts under the per-sample guidance scales s: one
    pass for a guidance-embedded teacher, else its unconditional and conditional passes batched, combined."""
    if teacher.guidance_embedded:
        return teacher.x0(z, t, b.cond, s)
    x0_uncond, x0_cond = teacher.x0(torch.cat([z, z]), torch.cat([t, t]), b.uncond.cat(b.cond)).chunk(2)
    return guided_x0_target(x0_uncond, x0_cond, s)


class Round:
    """What a round's step asks of its technique (engine/distill/run.py `round_step`)."""

    teacher: Family
    jitter = True

    def before_step(self) -> None:
        """Called before each step's batch (a consistency round updates its target network here)."""

    def target(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(the x0 the student should predict at b, each walker's next state)."""
        raise NotImplementedError

    def predict(self, student: Family, b: Batch) -> torch.Tensor:
        return student.x0(b.z, b.t, b.cond, b.s if student.guidance_embedded else None)

    def loss(self, student: Family, b: Batch, x0_hat: torch.Tensor, x0_target: torch.Tensor) -> torch.Tensor:
        return round_loss(student, b, x0_hat, x0_target)

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the technique beside the student (nothing, here)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class GuidanceRound(Round):
    """Teacher: a two-pass CFG model. Student: the teacher plus a guidance-scale input."""

    jitter = True  # guided sampling is used at any step count: learn continuous time

    def __init__(self, teacher: Family):
        self.teacher = teacher

    @torch.no_grad()
    def target(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_w, the walker's next state on the teacher's guided trajectory)."""
        x0_w = guided_x0(self.teacher, b.z, b.t, b, b.s)
        return x0_w, step_to_next(self.teacher, b, x0_w)

    def predict(self, student: Family, b: Batch) -> torch.Tensor:
        return student.x0(b.z, b.t, b.cond, b.s)


class ProgressiveRound(Round):
    """Teacher: N steps. Student: N / 2 steps, starting from the teacher's weights."""

    jitter = False  # the student is trained on exactly the grid it will sample on

    def __init__(self, teacher: Family):
        self.teacher = teacher

    def _x0_fn(self, f: Family, b: Batch):
        g = b.s if f.guidance_embedded else None
        return lambda z, t: f.x0(z, t.expand(z.shape[0]), b.cond, g)

    @torch.no_grad()
    def target(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.teacher
        z_s = teacher_two_steps(self._x0_fn(f, b), b.z, b.t, b.t_mid, b.t_next, f.schedule.alpha_sigma)
        a_t, s_t = f.schedule.alpha_sigma(b.t)
        a_s, s_s = f.schedule.alpha_sigma(b.t_next)
        z = b.z
        x0_target = two_step_x0_target(z, z_s, _bcast(a_t, z), _bcast(s_t, z), _bcast(a_s, z), _bcast(s_s, z))
        return x0_target, z_s

    def predict(self, student: Family, b: Batch) -> torch.Tensor:
        return self._x0_fn(student, b)(b.z, b.t)


def round_loss(student: Family, b: Batch, x0_hat: torch.Tensor, x0_target: torch.Tensor) -> torch.Tensor:
    """Truncated-SNR-weighted x0 loss at the walkers' times (the same for every round)."""
    a_t, s_t = student.schedule.alpha_sigma(b.t)
    return weighted_x0_loss(x0_hat, x0_target, a_t, s_t)
