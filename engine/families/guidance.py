"""The guidance-scale input of guidance-distilled students (Meng et al. 2023, §4.1).

The scale s is embedded like a timestep (sinusoidal features, then the model's own MLP) and added
to the timestep embedding. For diffusers UNets this is the `time_cond_proj_dim` input
(`timestep_cond`); FLUX-style transformers have their own `guidance_embeds`.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_timestep_embedding

GUIDANCE_DIM = 64  # width of the sinusoidal guidance-scale features of guidance-distilled students
GUIDANCE_SCALE = 100.0  # s in [1, 15] spread over the sinusoid's frequencies like timesteps in [0, 1000]


def guidance_features(s: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) guidance scales -> (B, dim) sinusoidal features."""
    return get_timestep_embedding(s.float() * GUIDANCE_SCALE, dim, flip_sin_to_cos=True, downscale_freq_shift=0)


def timestep_cond(family, z: torch.Tensor, guidance: torch.Tensor | None) -> dict:
    """The UNet's extra input for a guidance-distilled student, {"timestep_cond": (B, dim) features
    of the scale}; {} for a model that takes no scale."""
    if not family.guidance_embedded:
        return {}
    if guidance is None:
        raise ValueError("this model is guidance-distilled: pass the guidance scale")
    features = guidance_features(guidance.to(z.device).expand(z.shape[0]), family.denoiser.config.time_cond_proj_dim)
    return {"timestep_cond": features.to(z.dtype)}
