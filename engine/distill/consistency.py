"""Consistency distillation (Song et al. 2023; latent consistency models, Luo et al. 2023): DESIGN.md §10.

The student f(z_t, t, c, s) -> x0 is the family's own x0 reading of its network, with the guidance
input of guidance distillation (LCM's w-embedding is the same idea), so it answers in one pass at
any scale of its range. Its boundary condition f(z, 0) = z holds by that reading: at the clean end
x0_hat = z (rectified flow: z - 0 * u; a VP model: (z - 0 * eps) / 1).

Each step a walker sits at z_t on the guided teacher's trajectory; the teacher takes one DDIM step
of the walker's grid (the skipping interval of LCM: `teacher_steps` intervals over the schedule)
to z_u at the walker's scale s, and the student learns to map z_t to what the target network (an
EMA of the student, no gradient) maps z_u to - z_u itself where u is the clean end. Loss:
pseudo-Huber. Sampling: multistep consistency sampling (engine/sampling.py), recorded in the
student's lab.json as `"sampler": "consistency"`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..families.base import Family
from .targets import pseudo_huber_loss
from .techniques import Round, guided_x0, step_to_next
from .walkers import Batch


class ConsistencyRound(Round):
    jitter = True  # the student samples at any few-step grid: learn continuous time

    def __init__(self, teacher: Family, student: Family, *, target_ema: float, huber_c: float):
        self.teacher, self.student = teacher, student
        self.decay, self.huber_c = target_ema, huber_c
        self.params = [p for p in student.denoiser.parameters() if p.requires_grad]
        # the target network's weights where they differ from the student's: its trainable ones
        self.shadow = [p.detach().clone() for p in self.params] if target_ema > 0 else None

    def before_step(self) -> None:
        """target <- decay * target + (1 - decay) * student, after the last optimisation step."""
        if self.shadow is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay)

    @contextmanager
    def target_network(self):
        """The student's module with the target's weights swapped in (target_ema 0: the student itself)."""
        if self.shadow is None:
            yield self.student
            return
        with torch.no_grad():
            kept = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield self.student
        finally:
            with torch.no_grad():
                for p, k in zip(self.params, kept):
                    p.copy_(k)

    @torch.no_grad()
    def target(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        z_u = step_to_next(self.teacher, b, guided_x0(self.teacher, b.z, b.t, b, b.s))
        with self.target_network() as f:
            x0_target = consistency_target(f, z_u, b.t_next, b)
        return x0_target, z_u

    def loss(self, student: Family, b: Batch, x0_hat: torch.Tensor, x0_target: torch.Tensor) -> torch.Tensor:
        return pseudo_huber_loss(x0_hat, x0_target, self.huber_c)

    def state_dict(self) -> dict:
        return {"shadow": [s.cpu() for s in self.shadow]} if self.shadow is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.shadow is not None and state.get("shadow"):
            with torch.no_grad():
                for s, v in zip(self.shadow, state["shadow"]):
                    s.copy_(v)


def consistency_target(f: Family, z_u: torch.Tensor, u: torch.Tensor, b: Batch) -> torch.Tensor:
    """f(z_u, u), with the boundary condition made exact: z_u itself where u is the clean end (t = 0)."""
    x0 = f.x0(z_u, u, b.cond, b.s if f.guidance_embedded else None)
    clean = (u <= 0).view(-1, *([1] * (z_u.dim() - 1)))
    return torch.where(clean, z_u.to(x0.dtype), x0)
