"""The SD3 family: `SD3Transformer2DModel` (MMDiT), rectified flow on VAE latents.

z is the VAE latent (B, C, H/8, W/8), drawn for a seed as `StableDiffusion3Pipeline` draws it;
the transformer patches it itself and predicts u = eps - x0 at timestep sigma * 1000, and
x0_hat = z - t * u. Prompts go through two CLIP encoders and T5 (the pipeline's `encode_prompt`).
The grid is the scheduler's static shift (3.0 for SD3), or its dynamic shift when configured.
SD3 has no guidance-embedding module, so it cannot become a guidance-distilled student here.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

from ..errors import UsageError
from .base import Conditioning
from .pipeline import PipelineFamily
from .schedules import FlowMatchSchedule, x0_from_output

MAX_SEQUENCE_LENGTH = 256  # T5 tokens, the pipeline's default


class SD3Family(PipelineFamily):
    name = "sd3"
    pipeline_class = StableDiffusion3Pipeline
    default_steps = 28  # StableDiffusion3Pipeline.__call__'s num_inference_steps and guidance_scale
    default_guidance = 7.0

    def __init__(self, pipe, path=None, default_size=None):
        super().__init__(pipe, path, default_size)
        self.patch = pipe.transformer.config.patch_size
        cfg = pipe.scheduler.config
        self.schedule = FlowMatchSchedule(
            cfg, mu=lambda size, steps: calculate_shift(
                self.tokens(size),
                cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.16)),
            default_size=(self.default_size, self.default_size))

    def encode(self, prompts: list[str]) -> Conditioning:
        hidden, _, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, device=self.device,
                                                       num_images_per_prompt=1, do_classifier_free_guidance=False,
                                                       max_sequence_length=MAX_SEQUENCE_LENGTH)
        return Conditioning({"hidden": hidden.to(self.dtype), "pooled": pooled.to(self.dtype)})

    def noise_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        f = self.vae_factor
        return (batch, self.denoiser.config.in_channels, height // f, width // f)

    def x0(self, z, t, cond, guidance=None):
        timestep = (t.to(z.device, torch.float32) * 1000).expand(z.shape[0])  # the scheduler's timesteps
        u = self.denoiser(hidden_states=z, timestep=timestep, encoder_hidden_states=cond.tensors["hidden"],
                          pooled_projections=cond.tensors["pooled"], return_dict=False)[0]
        sigma = t.to(z.device, torch.float32).expand(z.shape[0]).view(-1, 1, 1, 1)
        return x0_from_output(u.float(), z.float(), 1 - sigma, sigma, "flow").to(z.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.pipe.vae.config
        return self.vae_decode(z / cfg.scaling_factor + cfg.shift_factor)

    def with_guidance_input(self, share: bool = False):
        raise UsageError("guidance distillation: SD3Transformer2DModel has no guidance-embedding input; "
                         "use an SD, SDXL or FLUX model")
