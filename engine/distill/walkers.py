"""Training inputs without a dataset: noise pushed through the teacher's own sampling steps.

A batch of walkers each follows one teacher trajectory (prompt, seed, guidance scale) down a time
grid. At every optimisation step each walker offers its current z_t; the technique computes the
teacher's target there, and the walker moves on along the teacher's trajectory. A walker that
reaches the clean end starts again from fresh noise with a new prompt. So the student learns on
exactly the states it meets when sampling, at the cost of the teacher passes the targets need
anyway (Meng et al. 2023 and Salimans & Ho 2022 noise dataset images instead).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..families.base import Conditioning, Family


@dataclass
class Batch:
    z: torch.Tensor  # (B, ...) current states
    t: torch.Tensor  # (B,) their times
    t_next: torch.Tensor  # (B,) the next time on each walker's grid
    t_mid: torch.Tensor  # (B,) midpoint between t and t_next on the teacher's finer grid
    s: torch.Tensor  # (B,) guidance scale of each walker
    cond: Conditioning  # prompt encodings
    uncond: Conditioning  # empty-prompt encodings (for two-pass CFG teachers)


class Walkers:
    """`batch` parallel teacher trajectories on the family's `steps`-step grid (jittered if `jitter`).

    Each walker draws its randomness (prompts, noise, scales, start) from a stream of its own,
    seeded by `seed` and its global index `first + k`: so N processes of `batch` walkers (process i
    passing `first = i * batch`) walk exactly the walkers of one process with N * `batch`."""

    def __init__(self, family: Family, prompts, *, batch: int, steps: int, height: int, width: int,
                 guidance_range: tuple[float, float], seed: int, jitter: bool, drop_prompt: float = 0.0,
                 first: int = 0):
        self.family, self.prompts, self.batch, self.steps = family, prompts, batch, steps
        self.shape = family.noise_shape(1, height, width)[1:]
        self.guidance_range, self.jitter, self.drop_prompt = guidance_range, jitter, drop_prompt
        # The family's own sampling grid (and the teacher's finer grid for midpoints): a student
        # is trained at the times it will be sampled at.
        self.base_grid = family.schedule.grid(steps, size=(height, width)).t.float().cpu()
        self.mid_grid = family.schedule.grid(2 * steps, size=(height, width)).t.float().cpu()[1::2]
        self.rngs = [random.Random(f"{seed}/{first + k}") for k in range(batch)]
        self.gens = [torch.Generator().manual_seed(seed * 1_000_003 + first + k) for k in range(batch)]
        device, dtype = family.device, family.dtype
        self.z = torch.zeros((batch, *self.shape), device=device, dtype=dtype)
        self.grid = torch.zeros(batch, steps + 1)  # each walker's own time grid, 1 -> 0
        self.i = torch.zeros(batch, dtype=torch.long)
        self.s = torch.zeros(batch)
        self.texts = [""] * batch
        for k in range(batch):
            self._restart(k)
        # Spread the walkers over the grid so a batch mixes noise levels from the first step on.
        self.start = torch.tensor([int(torch.randint(0, steps, (1,), generator=g)) for g in self.gens])

    def _restart(self, k: int) -> None:
        base = self.base_grid.clone()
        if self.jitter:  # cover continuous time, not only one grid's points
            gaps = base[:-1] - base[1:]
            offs = (torch.rand(self.steps - 1, generator=self.gens[k]) - 0.5) * torch.minimum(gaps[:-1], gaps[1:])
            base[1:-1] = base[1:-1] + offs
        self.grid[k] = base
        self.i[k] = 0
        self.z[k] = torch.randn(self.shape, generator=self.gens[k]).to(self.z)
        lo, hi = self.guidance_range
        rng = self.rngs[k]
        self.s[k] = rng.uniform(lo, hi)
        text = self.prompts(rng, 1)[0]
        self.texts[k] = "" if rng.random() < self.drop_prompt else text

    @torch.no_grad()
    def current(self) -> Batch:
        dev = self.z.device
        idx = torch.arange(self.batch)
        t = self.grid[idx, self.i]
        t_next = self.grid[idx, self.i + 1]
        t_mid = self.mid_grid[self.i] if not self.jitter else (t + t_next) / 2
        return Batch(self.z.clone(), t.to(dev), t_next.to(dev), t_mid.to(dev), self.s.clone().to(dev),
                     self.family.encode(self.texts), self.family.encode([""] * self.batch))

    def advance(self, z_next: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Move walkers (all, or those in `mask`) to their next grid point; restart finished ones."""
        mask = torch.ones(self.batch, dtype=torch.bool) if mask is None else mask.cpu()
        self.z = torch.where(mask.to(self.z.device).view(-1, *[1] * (self.z.dim() - 1)), z_next, self.z)
        self.i = self.i + mask.long()
        for k in torch.nonzero(self.i >= self.steps).flatten().tolist():
            self._restart(k)

    def warm_up(self, step_fn) -> None:
        """Walk each walker to its random start index with the teacher (step_fn(batch) -> z_next)."""
        for _ in range(int(self.start.max())):
            behind = self.i < self.start
            if not behind.any():
                break
            self.advance(step_fn(self.current()), behind)
