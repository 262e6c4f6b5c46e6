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
Optionally (`gan_weight` > 0, DMD2 §4.3) a small classifier head on the fake score's middle features
tells noised samples of the teacher's own ("real": no dataset) from noised samples of G, trained
with the fake score; G's loss adds the non-saturating GAN term through it.
Reverse-KL matching is mode-seeking: measure diversity (engine/evaluate/diversity.py).
"""

from __future__ import annotations

import torch

from ..families.base import Family
from ..sampling import ddim_step
from .targets import dmd_generator_loss, weighted_x0_loss
from .techniques import guided_x0
from .walkers import Batch, Walkers

T_RANGE = (0.02, 0.98)  # times at which the two scores are compared (DMD2 leaves out both ends)
POOL_STEPS = 16  # the teacher's sampling steps for the GAN's "real" images
POOL_EVERY = 25  # generator steps between refreshes of that pool


def middle_module(net: torch.nn.Module) -> torch.nn.Module:
    """The block whose output the GAN head reads: a UNet's mid block, a transformer's middle block."""
    net = getattr(net, "module", net)  # under DistributedDataParallel: the model itself
    if getattr(net, "mid_block", None) is not None:
        return net.mid_block
    blocks = getattr(net, "transformer_blocks", None)
    if blocks:
        return blocks[len(blocks) // 2]
    raise ValueError(f"no middle block to read features from in {type(net).__name__}")


class GanHead:
    """DMD2's classifier on the fake score's middle features: a forward hook keeps the block's output,
    pooled over space (or tokens), and a two-layer head reads a logit from it ("real": the teacher's)."""

    def __init__(self, fake: Family, lr: float):
        self.fake, self.lr = fake, lr
        self.head: torch.nn.Module | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.features: torch.Tensor | None = None
        middle_module(fake.denoiser).register_forward_hook(self._keep)

    def _keep(self, module, args, out) -> None:
        x = out if torch.is_tensor(out) else [o for o in out if torch.is_tensor(o)][-1]  # transformers: image tokens
        self.features = x.float().mean(dim=tuple(range(2, x.dim()))) if x.dim() == 4 else x.float().mean(1)

    def logits(self) -> torch.Tensor:
        """The logits of the fake score's last forward (built on first use, at its feature width)."""
        f = self.features
        if self.head is None:
            width = f.shape[-1]
            self.head = torch.nn.Sequential(torch.nn.Linear(width, 256), torch.nn.SiLU(),
                                            torch.nn.Linear(256, 1)).to(f.device)
            self.opt = torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=0.0)
        return self.head(f).squeeze(-1)


class DMDRound:
    jitter = False  # G is trained on exactly the grid it samples on

    def __init__(self, teacher: Family, student: Family, fake: Family, *, real_guidance: float,
                 fake_updates: int, fake_lr: float, grad_clip: float, seed: int, gan_weight: float = 0.0):
        self.teacher, self.student, self.fake = teacher, student, fake
        self.gan_weight = gan_weight
        self.gan = GanHead(fake, fake_lr) if gan_weight > 0 else None
        self.pool: tuple[torch.Tensor, Batch] | None = None  # the teacher's samples and their batch
        self.steps_done = 0
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
        return guided_x0(self.teacher, x_t, t, b, torch.full((t.shape[0],), self.real_guidance, device=x_t.device))

    def fake_x0(self, x_t: torch.Tensor, t: torch.Tensor, b: Batch) -> torch.Tensor:
        return self.fake.x0(x_t, t, b.cond, b.s if self.fake.guidance_embedded else None)

    def fake_update(self, x_g: torch.Tensor, b: Batch) -> float:
        """One step of the fake score: the ordinary denoising loss on G's samples (no gradient to G),
        and with a GAN head its classification of the teacher's samples against G's."""
        self.fake_opt.zero_grad(set_to_none=True)  # the generator's GAN term passed through the fake score
        x_t, t = self.noised(x_g)
        a, s = self.fake.schedule.alpha_sigma(t)
        loss = weighted_x0_loss(self.fake_x0(x_t, t, b), x_g, a, s)
        if self.gan is not None:
            d_fake = self.gan.logits()  # read from the forward just run, on G's noised samples
            real, real_b = self.pool
            real_t, t_real = self.noised(real)
            self.fake_x0(real_t, t_real, real_b)
            d_real = self.gan.logits()
            self.gan.opt.zero_grad(set_to_none=True)
            gan = torch.nn.functional.softplus(-d_real).mean() + torch.nn.functional.softplus(d_fake).mean()
            loss = loss + self.gan_weight * gan
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.fake_params, self.grad_clip)
        self.fake_opt.step()
        self.fake_opt.zero_grad(set_to_none=True)
        if self.gan is not None:
            self.gan.opt.step()
            self.gan.opt.zero_grad(set_to_none=True)
        return loss.item()

    @torch.no_grad()
    def teacher_samples(self, b: Batch) -> torch.Tensor:
        """The guided teacher's own samples for the batch's prompts (DDIM, POOL_STEPS steps): the GAN's
        "real" images, as no dataset is needed."""
        grid = self.teacher.schedule.grid(POOL_STEPS)
        z = torch.randn(b.z.shape, generator=self.gen).to(b.z.device, b.z.dtype)
        for i in range(POOL_STEPS):
            t = grid.t[i].expand(z.shape[0]).to(z.device)
            x0 = self.real_x0(z, t, b)
            z = ddim_step(z, x0, grid.alpha[i], grid.sigma[i], grid.alpha[i + 1], grid.sigma[i + 1])
        return x0

    # -- one generator step -------------------------------------------------------------------------
    def loss_fn(self, walkers: Walkers):
        """The generator's loss of one optimisation step; the fake score's updates happen inside it
        (fake_updates - 1 on fresh samples of G, then one on the samples G's loss is computed on)."""

        def fn(step: int) -> torch.Tensor:
            if self.gan is not None and (self.pool is None or self.steps_done % POOL_EVERY == 0):
                b = walkers.current()
                self.pool = (self.teacher_samples(b), b)
            self.steps_done += 1
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
            if self.gan is not None:  # non-saturating: G's noised samples should read as the teacher's
                # (after the fake score's update: its weights must not change between this and the backward)
                x_gt, t_g = self.noised(x_g)
                self.fake_x0(x_gt, t_g, b)
                loss = loss + self.gan_weight * torch.nn.functional.softplus(-self.gan.logits()).mean()
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
        state = {"fake": {n: p.detach().float().cpu() for n, p in zip(names, self.fake_params)},
                 "fake_optimizer": self.fake_opt.state_dict(), "generator": self.gen.get_state()}
        if self.gan is not None and self.gan.head is not None:
            state["gan_head"] = {k: v.cpu() for k, v in self.gan.head.state_dict().items()}
            state["gan_optimizer"] = self.gan.opt.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        with torch.no_grad():
            for p, v in zip(self.fake_params, state["fake"].values()):
                p.copy_(v.to(p))
        self.fake_opt.load_state_dict(state["fake_optimizer"])
        self.gen.set_state(state["generator"])
        if self.gan is not None and "gan_head" in state:
            width = state["gan_head"]["0.weight"].shape[1]
            self.gan.features = torch.zeros(1, width, device=self.fake_params[0].device)
            self.gan.logits()  # builds the head at its width
            self.gan.head.load_state_dict(state["gan_head"])
            self.gan.opt.load_state_dict(state["gan_optimizer"])
