"""Sampling: the DDIM step over (alpha, sigma, x0_hat) and classifier-free guidance.

Every family samples through `sample`: the family turns its network output into x0_hat, and the
step below is DDIM (Song et al. 2021, eq. 12 with eta = 0), which for rectified flow is exactly
the Euler step. A consistency or DMD student (its model directory says `"sampler": "consistency"`,
which the registry sets on the loaded family) samples by multistep consistency sampling instead
(Song et al. 2023, Algorithm 1): x0 = f(z, t_i), then z = alpha_{i+1} x0 + sigma_{i+1} eps_i with
fresh noise drawn from the image's own seed, so a seed still fixes the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .families.base import Conditioning, Family
from .measure import Measurement, measuring
from .trajectory import branches, trajectory


def ddim_step(z_t: torch.Tensor, x0_hat: torch.Tensor, alpha_t, sigma_t, alpha_s, sigma_s) -> torch.Tensor:
    """z_s = alpha_s * x0_hat + sigma_s * eps_hat, eps_hat = (z_t - alpha_t * x0_hat) / sigma_t."""
    eps_hat = (z_t - alpha_t * x0_hat) / sigma_t
    return alpha_s * x0_hat + sigma_s * eps_hat


def consistency_step(x0_hat: torch.Tensor, alpha_s, sigma_s, noise: torch.Tensor) -> torch.Tensor:
    """z_s = alpha_s * x0_hat + sigma_s * noise: the next state of multistep consistency sampling."""
    return alpha_s * x0_hat + sigma_s * noise


def step_noise(seeds: list[int], step: int, like: torch.Tensor) -> torch.Tensor:
    """Consistency sampling's fresh noise before step `step` (1, 2, ...) of each image, drawn on the CPU
    from a stream of the image's seed (not the initial noise's, which is step 0)."""
    shape = like.shape[1:]
    z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed((int(s) << 16) + step))
                     for s in seeds])
    return z.to(like.device, like.dtype)


def cfg_combine(out_uncond: torch.Tensor, out_cond: torch.Tensor, s: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2021) in diffusers' convention: s = 1 is no guidance."""
    return out_uncond + s * (out_cond - out_uncond)


@dataclass
class Guided:
    """x0_hat under guidance scale s for any family: one pass for guidance-embedded models or s = 1,
    else the unconditional and conditional passes batched as one forward."""
    family: Family
    cond: Conditioning
    uncond: Conditioning | None
    s: float

    @property
    def passes(self) -> int:
        """Denoiser passes per image per step."""
        return 1 if self.uncond is None else 2

    @classmethod
    def build(cls, family: Family, prompts: list[str], s: float) -> Guided:
        cond = family.encode(prompts)
        two_pass = s != 1.0 and not family.guidance_embedded
        return cls(family, cond, family.encode([""] * len(prompts)) if two_pass else None, s)

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        t = t.expand(b)
        g = torch.full((b,), self.s, device=z.device) if self.family.guidance_embedded else None
        if self.uncond is None:
            return self.family.x0(z, t, self.cond, g)
        with branches(("uncond", "cond")):
            x0 = self.family.x0(torch.cat([z, z]), torch.cat([t, t]), self.uncond.cat(self.cond))
        x0_uncond, x0_cond = x0.chunk(2)
        return cfg_combine(x0_uncond, x0_cond, self.s)


def initial_noise(family: Family, batch: int, height: int, width: int, seeds: list[int]) -> torch.Tensor:
    """One noise tensor per seed, drawn on the CPU so a seed gives the same image on any device."""
    shape = family.noise_shape(1, height, width)
    z = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    return z.to(family.device, family.dtype)


def sampler_of(family: Family) -> str:
    """How a model is sampled: "ddim" (every teacher, guidance and progressive students) or
    "consistency" (consistency and DMD students), as its model directory records it."""
    return getattr(family, "sampler", "ddim")


@torch.no_grad()
def sample(family: Family, prompts: list[str], *, steps: int, guidance: float, seeds: list[int],
           height: int, width: int, callback: Callable[[int, int], None] | None = None,
           output_type: str = "images") -> tuple[torch.Tensor, Measurement]:
    """Generate one image per prompt. Returns images (B, H, W, 3) uint8 (output_type "latent", as in
    diffusers: the final z, undecoded) and the measurement."""
    if len(seeds) != len(prompts):
        raise ValueError(f"one seed per prompt: got {len(seeds)} seeds for {len(prompts)} prompts")
    if output_type not in ("images", "latent"):
        raise ValueError(f"output_type must be 'images' or 'latent', got {output_type!r}")
    record = Measurement()
    with family.lock, measuring(family.device, record), trajectory(steps, len(prompts)) as traj:
        grid = family.schedule.grid(steps, size=(height, width))
        model = Guided.build(family, prompts, guidance)
        z = initial_noise(family, len(prompts), height, width, seeds)
        consistency = sampler_of(family) == "consistency"
        for i in range(steps):
            traj.step = i
            t = grid.t[i : i + 1].to(z.device)
            x0_hat = model(z, t)
            if not consistency:
                z = ddim_step(z, x0_hat, grid.alpha[i], grid.sigma[i], grid.alpha[i + 1], grid.sigma[i + 1])
            elif i + 1 < steps:
                z = consistency_step(x0_hat, grid.alpha[i + 1], grid.sigma[i + 1], step_noise(seeds, i + 1, z))
            else:  # the last step's x0 is the image (a grid whose end is only nearly clean adds no noise)
                z = x0_hat
            record.nfe += model.passes
            if callback:
                callback(i + 1, steps)
        images = family.decode(z) if output_type == "images" else z
        # A cache (engine/accel) replaced some passes: NFE counts the passes that ran.
        record.skipped = round(traj.skipped_rows / len(prompts))
        record.nfe -= record.skipped
    return images, record
