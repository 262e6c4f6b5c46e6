"""Distribution matching distillation (DMD2: Yin et al., NeurIPS 2024): DESIGN.md §11.

The generator G is the student (it starts as the teacher), mapping noise to an image in K steps on
its own grid, sampled by consistency sampling (x0, then re-noised to the next time). Its training
inputs are the states its own earlier steps reach from noise ("backward simulation"): walkers that
move by G's own step. Two scores judge its samples, both denoisers in x0 space:
- real: the frozen teacher under guidance `real_guidance`;
- fake: a copy of the teacher (or a LoRA over the same frozen base) trained, `fake_updates` times
  per generator step (the two time-scale rule), to denoise G's samples.
The generator's loss carries g = w (x0_fake - x0_real) (engine/distill/targets.py `dmd_gradient`):
it moves samples towards what the teacher would make of them and away from what G already makes.
Reverse-KL matching is mode-seeking: measure diversity (engine/evaluate/diversity.py).
"""

from __future__ import annotations

import torch

from ..families.base import Family
from .targets import dmd_generator_loss, weighted_x0_loss
from .walkers import Batch, Walkers

T_RANGE = (0.02, 0.98)  # times at which the two scores are compared (DMD2 leaves out both ends)


class DMDRound:
    jitter = False  # G is trained on exactly the grid it samples on

    def __init__(self, teacher: Family, student: Family, fake: Family, *, real_guidance: float,
                 fake_updates: int, fake_lr: float, grad_clip: float, seed: int):
        self.teacher, self.student, self.fake = teacher, student, fake
        self.real_guidance, self.fake_updates, self.grad_clip = real_guidance, fake_updates, grad_clip
        self.fake_params = [p for p in fake.denoiser.parameters() if p.requires_grad]
        self.fake_opt = torch.optim.AdamW(self.fake_params, lr=fake_lr, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(seed)
        self.fake_losses: list[float] = []

    # -- the pieces ---------------------------------------------------------------------------------
    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.gen).to(like.device, like.dtype)

    def generate(self, b: Batch) -> torch.Tensor:
        """G's x0 at the walkers' states (with gradient where grad is enabled)."""
        return self.student.x0(b.z, b.t, b.cond, b.s if self.student.guidance_embedded else None)

    def renoise(self, b: Batch, x0: torch.Tensor) -> torch.Tensor:
        """G's next state: x0 noised afresh to each walker's next time (consistency sampling)."""
        a, s = self.student.schedule.alpha_sigma(b.t_next)
        view = (-1, *([1] * (x0.dim() - 1)))
        return a.to(x0.dtype).view(view) * x0 + s.to(x0.dtype).view(view) * self._noise(x0)

    def noised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, t): x noised at a random time of T_RANGE per sample."""
        lo, hi = T_RANGE
        t = (lo + (hi - lo) * torch.rand(x.shape[0], generator=self.gen)).to(x.device)
        a, s = self.teacher.schedule.alpha_sigma(t)
        view = (-1, *([1] * (x.dim() - 1)))
        return a.to(x.dtype).view(view) * x + s.to(x.dtype).view(view) * self._noise(x), t

    def real_x0(self, x_t: torch.Tensor, t: torch.Tensor, b: Batch) -> torch.Tensor:
        """The teacher's guided x0 at `real_guidance` (one pass if it takes the scale as input)."""
        f, s = self.teacher, self.real_guidance
        if f.guidance_embedded:
            return f.x0(x_t, t, b.cond, torch.full_like(t, s))
        x0_uncond, x0_cond = f.x0(torch.cat([x_t, x_t]), torch.cat([t, t]), b.uncond.cat(b.cond)).chunk(2)
        return x0_uncond + s * (x0_cond - x0_uncond)

    def fake_x0(self, x_t: torch.Tensor, t: torch.Tensor, b: Batch) -> torch.Tensor:
        return self.fake.x0(x_t, t, b.cond, b.s if self.fake.guidance_embedded else None)

    def fake_update(self, x_g: torch.Tensor, b: Batch) -> float:
        """One step of the fake score: the ordinary denoising loss on G's samples (no gradient to G)."""
        x_t, t = self.noised(x_g)
        a, s = self.fake.schedule.alpha_sigma(t)
        loss = weighted_x0_loss(self.fake_x0(x_t, t, b), x_g, a, s)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.fake_params, self.grad_clip)
        self.fake_opt.step()
        self.fake_opt.zero_grad(set_to_none=True)
        return loss.item()

    # -- one generator step -------------------------------------------------------------------------
    def loss_fn(self, walkers: Walkers):
        """The generator's loss of one optimisation step; the fake score's updates happen inside it
        (fake_updates - 1 on fresh samples of G, then one on the samples G's loss is computed on)."""

        def fn(step: int) -> torch.Tensor:
            for _ in range(self.fake_updates - 1):
                b = walkers.current()
                with torch.no_grad():
                    x_g = self.generate(b)
                self.fake_losses.append(self.fake_update(x_g, b))
                walkers.advance(self.renoise(b, x_g))
            b = walkers.current()
            x_g = self.generate(b)
            x_t, t = self.noised(x_g.detach())
            with torch.no_grad():
                x0_real, x0_fake = self.real_x0(x_t, t, b), self.fake_x0(x_t, t, b)
            loss = dmd_generator_loss(x_g, x0_real, x0_fake)
            self.fake_losses.append(self.fake_update(x_g.detach(), b))
            walkers.advance(self.renoise(b, x_g.detach()))
            return loss

        return fn

    def warm_up_step(self, b: Batch) -> torch.Tensor:
        """A walker's move by G's own step (backward simulation), for Walkers.warm_up."""
        with torch.no_grad():
            return self.renoise(b, self.generate(b))

    def metrics(self) -> dict:
        """The fake score's mean loss since the last call (the job's second curve)."""
        out = {"fake_loss": sum(self.fake_losses) / len(self.fake_losses)} if self.fake_losses else {}
        self.fake_losses = []
        return out

    # -- checkpoints: the fake score and its optimiser beside the generator's ------------------------
    def state_dict(self) -> dict:
        names = [n for n, p in self.fake.denoiser.named_parameters() if p.requires_grad]
        return {"fake": {n: p.detach().float().cpu() for n, p in zip(names, self.fake_params)},
                "fake_optimizer": self.fake_opt.state_dict(), "generator": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        with torch.no_grad():
            for p, v in zip(self.fake_params, state["fake"].values()):
                p.copy_(v.to(p))
        self.fake_opt.load_state_dict(state["fake_optimizer"])
        self.gen.set_state(state["generator"])
