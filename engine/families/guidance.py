"""The guidance-scale input of guidance-distilled students (Meng et al. 2023, §4.1).

The scale s is embedded like a timestep (sinusoidal features, then the model's own MLP) and added
to the timestep embedding. For diffusers UNets this is the `time_cond_proj_dim` input
(`timestep_cond`); FLUX-style transformers have their own `guidance_embeds` (fed s itself, as
their pipelines do).

Which sinusoid a UNet was trained on is part of the model (`guidance_embedding` in its lab.json):
- "lcm": what diffusers' StableDiffusion(XL)Pipeline feeds any UNet with `time_cond_proj_dim`
  (LCM's `get_guidance_scale_embedding(s - 1)`): every new student, and every foreign UNet with
  that input (an LCM model), so stock pipelines run the lab's students and the lab runs theirs;
- "lab-v1": the sinusoid of s * 100 that students trained before carry (read, never written).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_timestep_embedding

GUIDANCE_DIM = 64  # width of the sinusoidal guidance-scale features of guidance-distilled students
CONVENTIONS = ("lcm", "lab-v1")
NEW = "lcm"  # the convention new students are trained with
LEGACY = "lab-v1"  # what a lab.json with a guidance input and no `guidance_embedding` means
LEGACY_SCALE = 100.0  # lab-v1: s in [1, 15] spread over the sinusoid's frequencies like timesteps


def guidance_features(s: torch.Tensor, dim: int, convention: str = NEW) -> torch.Tensor:
    """(B,) guidance scales in diffusers' convention (1 = no guidance) -> (B, dim) features."""
    if convention == "lcm":
        from diffusers import StableDiffusionPipeline  # the stock pipelines' own method (it reads no state)
        return StableDiffusionPipeline.get_guidance_scale_embedding(None, s.float() - 1, embedding_dim=dim)
    if convention == "lab-v1":
        return get_timestep_embedding(s.float() * LEGACY_SCALE, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
    raise ValueError(f"guidance_embedding must be one of {', '.join(CONVENTIONS)}, got {convention!r}")


def convention_of(meta: dict) -> str:
    """The guidance embedding of a model from its lab.json (`{}` for a plain diffusers directory)."""
    if "guidance_embedding" in meta:
        return meta["guidance_embedding"]
    return LEGACY if meta.get("guidance_input") or meta.get("guidance_range") else NEW


def timestep_cond(family, z: torch.Tensor, guidance: torch.Tensor | None) -> dict:
    """The UNet's extra input for a guidance-distilled student, {"timestep_cond": (B, dim) features
    of the scale}; {} for a model that takes no scale."""
    if not family.guidance_embedded:
        return {}
    if guidance is None:
        raise ValueError("this model is guidance-distilled: pass the guidance scale")
    features = guidance_features(guidance.to(z.device).expand(z.shape[0]), family.denoiser.config.time_cond_proj_dim,
                                 family.guidance_embedding)
    return {"timestep_cond": features.to(z.dtype)}
