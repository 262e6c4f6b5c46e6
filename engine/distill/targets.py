"""Distillation targets and weights, written once in (alpha, sigma, x0) space for every family."""

from __future__ import annotations

import torch

from ..sampling import cfg_combine, ddim_step


def guided_x0_target(x0_uncond: torch.Tensor, x0_cond: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Meng et al. 2023, eq. 6 in diffusers' convention: x0_w = x0_uncond + s * (x0_cond - x0_uncond)."""
    return cfg_combine(x0_uncond, x0_cond, s.view(-1, *([1] * (x0_cond.dim() - 1))))


def two_step_x0_target(z_t: torch.Tensor, z_s: torch.Tensor, alpha_t, sigma_t, alpha_s, sigma_s) -> torch.Tensor:
    """Salimans & Ho 2022, Algorithm 2: the x0 for which one DDIM step t -> s lands on the teacher's z_s.

    x0_target = (z_s - (sigma_s / sigma_t) * z_t) / (alpha_s - (sigma_s / sigma_t) * alpha_t)
    """
    ratio = sigma_s / sigma_t
    return (z_s - ratio * z_t) / (alpha_s - ratio * alpha_t)


def teacher_two_steps(x0_fn, z_t, t, m, s, alpha_sigma):
    """Two DDIM steps t -> m -> s of the teacher (x0_fn(z, t) -> x0_hat); returns z_s."""
    a_t, s_t = alpha_sigma(t)
    a_m, s_m = alpha_sigma(m)
    a_s, s_s = alpha_sigma(s)
    z_m = ddim_step(z_t, x0_fn(z_t, t), _b(a_t, z_t), _b(s_t, z_t), _b(a_m, z_t), _b(s_m, z_t))
    return ddim_step(z_m, x0_fn(z_m, m), _b(a_m, z_t), _b(s_m, z_t), _b(a_s, z_t), _b(s_s, z_t))


def truncated_snr_weight(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Salimans & Ho 2022, eq. 10 ("truncated SNR"): max(SNR, 1) = max(alpha^2 / sigma^2, 1)."""
    return torch.clamp(alpha**2 / sigma**2, min=1.0)


def weighted_x0_loss(x0_hat: torch.Tensor, x0_target: torch.Tensor, alpha: torch.Tensor,
                     sigma: torch.Tensor) -> torch.Tensor:
    """mean over the batch of max(SNR_t, 1) * ||x0_hat - x0_target||^2 (mean over pixels)."""
    per_sample = ((x0_hat.float() - x0_target.float()) ** 2).flatten(1).mean(1)
    return (truncated_snr_weight(alpha.float(), sigma.float()) * per_sample).mean()


def pseudo_huber_loss(x0_hat: torch.Tensor, x0_target: torch.Tensor, c_scale: float) -> torch.Tensor:
    """Consistency models' loss (Song & Dhariwal 2023): mean over the batch of
    sqrt(||x0_hat - x0_target||^2 + c^2) - c, the norm over a whole sample, c = c_scale * sqrt(its dimensions)."""
    c = c_scale * x0_hat[0].numel() ** 0.5
    sq = ((x0_hat.float() - x0_target.float()) ** 2).flatten(1).sum(1)
    return (torch.sqrt(sq + c * c) - c).mean()


def dmd_gradient(x_g: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """DMD2's generator gradient in x0 space (Yin et al. 2024, eq. 2 with their normaliser):
    g = w * (x0_fake - x0_real), w = 1 / mean|x_g - x0_real| per sample. Descending it moves a
    sample towards what the real score denoises it to and away from what the fake one does."""
    w = 1.0 / (x_g - x0_real).abs().flatten(1).mean(1).clamp_min(1e-8)
    return w.view(-1, *([1] * (x_g.dim() - 1))) * (x0_fake - x0_real)


def dmd_generator_loss(x_g: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * ||x_g - stopgrad(x_g - g)||^2 (mean over elements): a loss whose gradient in x_g is g
    (over the number of elements), so autograd carries DMD's gradient into the generator."""
    x = x_g.float()
    g = dmd_gradient(x.detach(), x0_real.float(), x0_fake.float())
    return 0.5 * torch.nn.functional.mse_loss(x, (x.detach() - g), reduction="mean")


def _b(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample (B,) or scalar value over a batch like `like` (B, ...)."""
    v = torch.as_tensor(v, device=like.device, dtype=like.dtype)
    return v.view(-1, *([1] * (like.dim() - 1))) if v.dim() == 1 else v
