"""The one contract between model families and everything else (DESIGN.md §3).

A noisy sample is z_t = alpha_t * x0 + sigma_t * eps. Each family adapter turns its network's raw
output into x0_hat; samplers, guidance and trainers only ever see (alpha, sigma, x0_hat) and never
ask which family they hold.
"""

from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn


@dataclass
class Grid:
    """A sampling grid, noisiest first: steps + 1 points, the last one clean (or nearly)."""
    t: torch.Tensor  # (N + 1,) the family's time at each point (continuous in [0, 1], 1 = noise)
    alpha: torch.Tensor  # (N + 1,)
    sigma: torch.Tensor  # (N + 1,)


class FlowSchedule:
    """Rectified flow: alpha_t = 1 - t, sigma_t = t; with an optional SD3-style time shift."""

    def __init__(self, shift: float = 1.0):
        self.shift = shift

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1.0 - t, t

    def grid(self, steps: int, size: tuple[int, int] | None = None) -> Grid:
        """`size` (height, width) is for schedules whose shift depends on the image size (FLUX)."""
        u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        t = self.shift * u / (1 + (self.shift - 1) * u)
        a, s = self.alpha_sigma(t)
        return Grid(t.float(), a.float(), s.float())


@dataclass
class Conditioning:
    """A family's prompt encoding for a batch: tensors with a leading batch dimension."""
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def cat(self, other: Conditioning) -> Conditioning:
        out = {}
        for k, a in self.tensors.items():
            b = other.tensors[k]
            if a.dim() >= 2 and a.shape[1:] != b.shape[1:]:  # pad token axes to the same length
                n = max(a.shape[1], b.shape[1])
                a, b = _pad_to(a, n), _pad_to(b, n)
            out[k] = torch.cat([a, b])
        return Conditioning(out)

    def repeat(self, n: int) -> Conditioning:
        return Conditioning({k: v.repeat_interleave(n, 0) for k, v in self.tensors.items()})

    def index(self, idx) -> Conditioning:
        return Conditioning({k: v[idx] for k, v in self.tensors.items()})


def _pad_to(x: torch.Tensor, n: int) -> torch.Tensor:
    pad = torch.zeros((x.shape[0], n - x.shape[1], *x.shape[2:]), dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], 1)


def shared_copy(net: nn.Module) -> nn.Module:
    """A copy of `net`'s modules that holds `net`'s own parameter and buffer tensors: adapters
    injected into the copy leave `net` as it is, and no weight is stored twice. (Training must not
    change the shared weights: they are the teacher's.)"""
    return copy.deepcopy(net, {id(t): t for t in (*net.parameters(), *net.buffers())})


def assign_weights(new: nn.Module, old: nn.Module, share: bool) -> list[str]:
    """Load `old`'s weights into `new` (which may have more); with `share`, `new` takes `old`'s
    tensors themselves. Returns the names `new` has that `old` lacks."""
    missing, unexpected = new.load_state_dict(old.state_dict(keep_vars=share), strict=False, assign=share)
    if unexpected:
        raise ValueError(f"unexpected weights {unexpected[:3]}")
    return missing


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # denoiser -> its lock
_LOCKS_GUARD = threading.Lock()


class Family:
    """Base of every family adapter. Subclasses set the attributes and implement the methods."""

    name: str = "base"  # family id: "embedded", "sd", "flux", ...
    schedule: Any  # has alpha_sigma(t) and grid(steps)
    denoiser: nn.Module  # the network that runs once per pass (what caching, FP8 and LoRA act on)
    guidance_embedded: bool = False  # True: takes the guidance scale as an input, one pass per step
    guidance_embedding: str = "lcm"  # how a UNet's guidance input reads the scale (families/guidance.py)
    sampler: str = "ddim"  # "consistency" for consistency and DMD students (engine/sampling.py); from lab.json
    shares_base: bool = False  # a LoRA student whose frozen weights are its teacher's own tensors
    default_size: int = 512  # image side used when none is asked for
    default_steps: int = 50  # sampling steps when none are asked for (pipeline families: their pipeline's)
    default_guidance: float = 5.0  # guidance scale when none is asked for (1 = one pass a step)
    path: Path | None = None

    @property
    def lock(self) -> threading.RLock:
        """One use of this model at a time: loaded models are shared by every request of a process
        (engine/registry.py), and a cache or FP8 mode changes the denoiser in place while it is on,
        so the sampler and `accelerated` hold this lock for as long as they use the model."""
        with _LOCKS_GUARD:
            return _LOCKS.setdefault(self.denoiser, threading.RLock())

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the denoiser computes in (and latents and prompts are made in): that of its
        parameters, passing over any stored in float8 (FP8 weights mode casts those up layer by layer)."""
        dtypes = (p.dtype for p in self.denoiser.parameters())
        first = next(dtypes)
        return first if first.itemsize > 1 else next((d for d in dtypes if d.itemsize > 1), first)

    def encode(self, prompts: list[str]) -> Conditioning:
        raise NotImplementedError

    def noise_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        raise NotImplementedError

    def x0(self, z: torch.Tensor, t: torch.Tensor, cond: Conditioning,
           guidance: torch.Tensor | None = None) -> torch.Tensor:
        """One denoiser pass: x0_hat for the batch z at times t (B,). `guidance` (B,) only for
        guidance-embedded models."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Clean sample -> images (B, H, W, 3) uint8 on the CPU."""
        raise NotImplementedError

    def check_size(self, height: int, width: int) -> None:
        """Raise UsageError if the family cannot make images of this size."""

    # -- what distillation needs (engine/distill); families that cannot do one raise UsageError --
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # default LoRA target modules

    def clone(self, share: bool = False) -> Family:
        """An independent copy (a student starts as its teacher); with `share`, a second module tree
        over the same weight tensors (a LoRA student over its frozen teacher: one copy of the base)."""
        raise NotImplementedError

    def with_guidance_input(self, share: bool = False) -> Family:
        """A copy whose denoiser also takes the guidance scale (Meng et al. 2023), with the new
        weights zero-initialised so that it starts as this model's conditional branch; with `share`,
        its other weights are this model's own tensors."""
        raise NotImplementedError

    def save(self, path: Path, *, dtype: torch.dtype = torch.float16, extra: dict | None = None) -> None:
        """Write a model directory that `engine.registry` loads back."""
        raise NotImplementedError

    def guidance_meta(self) -> dict:
        """What a saved model's lab.json says of its guidance input (nothing where it has none)."""
        return {"guidance_embedding": self.guidance_embedding} if self.guidance_embedded else {}

    def training_prompts(self, rng, n: int) -> list[str]:
        """`n` prompts of the model's own domain, for distillation without a prompt file."""
        from ..errors import UsageError
        raise UsageError(f"prompts: the {self.name} family has no built-in prompts; pass a prompt file")

    def judge(self):
        """The network that reads the attributes of this model's domain in its images (prompt
        adherence, and the features of the domain's FID), on the model's device; None where the
        domain has none (real models: CLIP and Inception, which the user supplies)."""
        return None

    def identity(self) -> str:
        """What the lab stores things about this model under (cached images, cache calibrations):
        its directory and when its files last changed, so that a model retrained in place is not
        taken for its old self; the family's name for a model with no directory."""
        if self.path is None:
            return f"<{self.name}>"
        path = Path(self.path).resolve()
        newest = max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0)
        return f"{path}@{newest:.0f}"

    def describe(self) -> dict:
        return {"family": self.name, "guidance_embedded": self.guidance_embedded,
                "parameters": sum(p.numel() for p in self.denoiser.parameters())}
