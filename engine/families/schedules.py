"""Noise schedules of real diffusers models, in the lab's (t, alpha, sigma) terms (DESIGN.md §3).

Each schedule reads a diffusers scheduler config and lets diffusers' own scheduler place the
inference timesteps, so the lab's grid is the one the diffusers pipeline would use:
- `VPSchedule`: variance-preserving DDPM betas (SD 1.x / 2.x / SDXL): alpha_t = sqrt(abar_t),
  sigma_t = sqrt(1 - abar_t). The grid is `EulerDiscreteScheduler`'s: the deterministic DDIM step
  is the Euler step in sigma/alpha (Song et al. 2021, §4.3; Karras et al. 2022, eq. 4), and Euler's
  grid is self-consistent for every timestep spacing and ends clean (sigma = 0).
- `FlowMatchSchedule`: rectified flow (FLUX, SD3): alpha_t = 1 - t, sigma_t = t, with
  `FlowMatchEulerDiscreteScheduler`'s static shift or FLUX's dynamic shift by image size.

Time: every family receives continuous t in [0, 1] (1 = noise). VP families map it to the UNet's
timestep t * (num_train_timesteps - 1); flow families use t = sigma.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

from ..errors import UsageError
from .base import Grid

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")


def x0_from_output(out: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                   prediction_type: str) -> torch.Tensor:
    """The network's raw output -> x0_hat, for z = alpha * x0 + sigma * eps.

    epsilon: x0 = (z - sigma * eps) / alpha; v (Salimans & Ho 2022, eq. 5): x0 = alpha * z - sigma * v;
    flow velocity u = eps - x0 with alpha = 1 - sigma: x0 = z - sigma * u."""
    if prediction_type == "epsilon":
        return (z - sigma * out) / alpha
    if prediction_type == "v_prediction":
        return alpha * z - sigma * out
    if prediction_type == "flow":
        return z - sigma * out
    if prediction_type == "sample":
        return out
    raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}")


def output_from_x0(x0: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                   prediction_type: str) -> torch.Tensor:
    """x0 -> the raw output the network should have given (the inverse of `x0_from_output`)."""
    if prediction_type == "sample":
        return x0
    eps = (z - alpha * x0) / sigma
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return alpha * eps - sigma * x0
    if prediction_type == "flow":
        return eps - x0
    raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}")


class VPSchedule:
    """DDPM betas as diffusers configures them; the grid is diffusers' Euler (= DDIM) grid."""

    def __init__(self, config: dict):
        # Every value the model's own scheduler uses carries over, its class defaults included
        # (diffusers' from_config would otherwise swap those for Euler's defaults).
        self.config = {k: v for k, v in dict(config).items() if k != "_use_default_values"}
        self.scheduler = EulerDiscreteScheduler.from_config(self.config)
        cfg = self.scheduler.config
        if cfg.timestep_type != "discrete":
            raise UsageError(f"scheduler timestep_type must be 'discrete' for the SD family, got {cfg.timestep_type!r}")
        if cfg.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise UsageError(f"scheduler prediction_type must be epsilon, v_prediction or sample, "
                             f"got {cfg.prediction_type!r}")
        if cfg.rescale_betas_zero_snr and cfg.prediction_type == "epsilon":
            raise UsageError("a zero-terminal-SNR schedule needs prediction_type v_prediction (epsilon cannot "
                             "give x0 where alpha = 0)")
        self.T = cfg.num_train_timesteps
        abar = self.scheduler.alphas_cumprod.double()
        self._ve = ((1 - abar) / abar).sqrt()  # (T,) sigma_t / alpha_t at each training timestep

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    @property
    def zero_snr(self) -> bool:
        return bool(self.scheduler.config.rescale_betas_zero_snr)

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous t in [0, 1] -> the UNet's timestep in [0, T - 1] (float32)."""
        return (t.double() * (self.T - 1)).float()

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Linear interpolation of sigma/alpha between training timesteps, as diffusers' Euler does.
        idx = t.double() * (self.T - 1)
        lo = idx.floor().clamp(0, self.T - 2)
        frac = idx - lo
        ve = self._ve.to(t.device)
        ve_t = torch.lerp(ve[lo.long()], ve[lo.long() + 1], frac)
        alpha = 1 / (1 + ve_t**2).sqrt()
        dtype = t.dtype if t.is_floating_point() else torch.float32
        return alpha.to(dtype), (ve_t * alpha).to(dtype)

    def grid(self, steps: int, size: tuple[int, int] | None = None) -> Grid:
        sch = EulerDiscreteScheduler.from_config(self.scheduler.config)  # a fresh one: grids may be built concurrently
        sch.set_timesteps(steps)
        ve = sch.sigmas.double()  # (steps + 1,), the last one 0
        t = torch.cat([sch.timesteps.double() / (self.T - 1), torch.zeros(1, dtype=torch.float64)])
        alpha = 1 / (1 + ve**2).sqrt()
        return Grid(t, alpha.float(), (ve * alpha).float())

    def with_parameterization(self, prediction_type: str | None = None, zero_snr: bool | None = None) -> VPSchedule:
        """This schedule for a student: zero-terminal-SNR betas (Lin et al. 2024, Alg. 1, with trailing
        timesteps) and/or another prediction type."""
        cfg = dict(self.config)
        if prediction_type is not None:
            cfg["prediction_type"] = prediction_type
        if zero_snr is not None:
            cfg["rescale_betas_zero_snr"] = zero_snr
            if zero_snr:
                cfg["timestep_spacing"] = "trailing"
        return VPSchedule(cfg)


class FlowMatchSchedule:
    """Rectified flow with diffusers' FlowMatchEulerDiscreteScheduler placing the sigmas.

    `mu(size, steps)` gives the dynamic shift for an image of `size` (height, width) when the config
    asks for one; `linspace_sigmas` says the pipeline passes sigmas = linspace(1, 1/N, N) (FLUX)."""

    def __init__(self, config: dict, mu: Callable[[tuple[int, int], int], float] | None = None,
                 linspace_sigmas: bool = False, default_size: tuple[int, int] = (1024, 1024)):
        self.config = dict(config)
        self.scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.config)
        if self.scheduler.config.get("stochastic_sampling"):
            raise UsageError("scheduler stochastic_sampling must be false: the lab samples deterministically")
        self.mu = mu
        self.linspace_sigmas = linspace_sigmas
        self.default_size = default_size

    prediction_type = "flow"

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1.0 - t, t

    def grid(self, steps: int, size: tuple[int, int] | None = None) -> Grid:
        kwargs = {}
        if self.scheduler.config.use_dynamic_shifting:
            if self.mu is None:
                raise UsageError("this scheduler config asks for a dynamic shift the family does not define")
            kwargs["mu"] = self.mu(tuple(size or self.default_size), steps)
        # a fresh scheduler: grids may be built concurrently
        sch = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
        if self.linspace_sigmas:
            sch.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), **kwargs)
        else:
            sch.set_timesteps(steps, **kwargs)
        s = sch.sigmas.double()  # (steps + 1,), the last one 0 (or the terminal shift)
        return Grid(s, (1 - s).float(), s.float())
