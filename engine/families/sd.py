"""The SD family: `UNet2DConditionModel` teachers on VP schedules (SD 1.x, SD 2.x, SDXL).

The UNet predicts eps, v or x0 (the scheduler config's `prediction_type`) at timestep
t * (T - 1); `x0_from_output` turns that into x0_hat with the schedule's alpha_t, sigma_t. Latents
are the VAE's (B, 4, H/8, W/8), scaled by its `scaling_factor`, drawn exactly as diffusers draws
them for a seed. SDXL adds a second text encoder, the pooled prompt embedding and the size/crop
"time ids" (Podell et al. 2023, §2.2), which it derives from the latent size as its pipeline does.
"""

from __future__ import annotations

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

from ..errors import UsageError
from .base import Conditioning, assign_weights
from .guidance import GUIDANCE_DIM, timestep_cond
from .pipeline import PipelineFamily
from .schedules import VPSchedule, x0_from_output


class SDFamily(PipelineFamily):
    """SD 1.x / 2.x: one CLIP text encoder, epsilon or v_prediction."""

    name = "sd"
    pipeline_class = StableDiffusionPipeline
    denoiser_name = "unet"
    load_kwargs = {"safety_checker": None, "requires_safety_checker": False}
    default_steps = 50  # StableDiffusionPipeline.__call__'s num_inference_steps and guidance_scale
    default_guidance = 7.5

    def __init__(self, pipe, path=None, default_size=None, schedule: VPSchedule | None = None):
        super().__init__(pipe, path, default_size)
        self.schedule = schedule or VPSchedule(pipe.scheduler.config)

    @property
    def native_size(self) -> int:  # StableDiffusionPipeline keeps no default_sample_size of its own
        return self.pipe.unet.config.sample_size * self.vae_factor

    @property
    def prediction_type(self) -> str:
        return self.schedule.prediction_type

    @property
    def guidance_embedded(self) -> bool:
        return self.denoiser.config.time_cond_proj_dim is not None

    def make_scheduler(self):
        if self.schedule.config == VPSchedule(self.pipe.scheduler.config).config:
            return super().make_scheduler()
        # A student's parameterization: Euler's scheduler is the lab's grid and knows zero-SNR betas.
        return EulerDiscreteScheduler.from_config(self.schedule.scheduler.config)

    def equivalent_scheduler(self):
        # Deterministic DDIM is Euler in sigma/alpha; Euler's grid is the lab's (schedules.py).
        return EulerDiscreteScheduler.from_config(self.schedule.config)

    def pipeline_kwargs(self, guidance: float) -> dict:
        if self.guidance_embedded and self.guidance_embedding != "lcm":
            raise UsageError(f"this student reads the guidance scale through the {self.guidance_embedding!r} "
                             f"embedding, which diffusers' pipelines do not feed (they feed LCM's); retrain it "
                             f"with this version of the lab")
        return {"guidance_scale": guidance}

    def encode(self, prompts: list[str]) -> Conditioning:
        hidden, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
        return Conditioning({"hidden": hidden.to(self.dtype)})

    def noise_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        f = self.vae_factor
        return (batch, self.denoiser.config.in_channels, height // f, width // f)

    def added_cond(self, z: torch.Tensor, cond: Conditioning) -> dict:
        """Extra UNet inputs beyond the text (SDXL's pooled text and size ids)."""
        return {}

    def x0(self, z, t, cond, guidance=None):
        t = t.to(z.device).expand(z.shape[0])
        extra = timestep_cond(self, z, guidance)
        added = self.added_cond(z, cond)
        if added:
            extra["added_cond_kwargs"] = added
        out = self.denoiser(z, self.schedule.timestep(t), encoder_hidden_states=cond.tensors["hidden"],
                            return_dict=False, **extra)[0]
        alpha, sigma = (v.float().view(-1, 1, 1, 1) for v in self.schedule.alpha_sigma(t))
        return x0_from_output(out.float(), z.float(), alpha, sigma, self.prediction_type).to(z.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(z)
            std = torch.tensor(std).view(1, -1, 1, 1).to(z)
            return self.vae_decode(z * std / vae.config.scaling_factor + mean)
        return self.vae_decode(z / vae.config.scaling_factor)

    # -- students --

    def with_parameterization(self, prediction_type: str | None = None, zero_snr: bool | None = None,
                              share: bool = False) -> SDFamily:
        """The same network read under another prediction type and/or zero-terminal-SNR schedule
        (what step-distillation students switch to: v_prediction with rescaled zero-SNR betas)."""
        fam = self.clone(share)
        fam.schedule = self.schedule.with_parameterization(prediction_type, zero_snr)
        return fam

    def with_guidance_input(self, share: bool = False) -> SDFamily:
        if self.guidance_embedded:
            return self.clone(share)
        unet = UNet2DConditionModel.from_config({**self.denoiser.config, "time_cond_proj_dim": GUIDANCE_DIM})
        torch.nn.Module.to(unet, self.device, self.dtype)  # a plain move (ModelMixin.to warns)
        try:
            missing = assign_weights(unet, self.denoiser, share)
        except ValueError as e:
            raise UsageError(f"cannot add a guidance input to this UNet ({e})") from None
        if set(missing) != {"time_embedding.cond_proj.weight"}:
            raise UsageError(f"cannot add a guidance input to this UNet (missing {missing})")
        torch.nn.init.zeros_(unet.time_embedding.cond_proj.weight)
        return self._with_denoiser(unet)


class SDXLFamily(SDFamily):
    """SDXL: two CLIP text encoders (penultimate layers concatenated), pooled text and time ids."""

    name = "sdxl"
    pipeline_class = StableDiffusionXLPipeline
    load_kwargs = {}
    default_guidance = 5.0  # StableDiffusionXLPipeline.__call__'s (its 50 steps are SD's)

    def encode(self, prompts: list[str]) -> Conditioning:
        hidden, _, pooled, _ = self.pipe.encode_prompt(prompts, device=self.device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=False)
        if self.pipe.config.get("force_zeros_for_empty_prompt", False):
            # SDXL's pipeline uses zeros, not the encoded "", for the unconditional branch.
            empty = torch.tensor([p == "" for p in prompts], device=hidden.device)
            hidden = torch.where(empty.view(-1, 1, 1), torch.zeros_like(hidden), hidden)
            pooled = torch.where(empty.view(-1, 1), torch.zeros_like(pooled), pooled)
        return Conditioning({"hidden": hidden.to(self.dtype), "pooled": pooled.to(self.dtype)})

    def added_cond(self, z, cond):
        # (original size, crop top-left, target size), all the image size, as the pipeline's defaults.
        h, w = z.shape[-2] * self.vae_factor, z.shape[-1] * self.vae_factor
        ids = torch.tensor([h, w, 0, 0, h, w], device=z.device, dtype=z.dtype).expand(z.shape[0], 6)
        return {"text_embeds": cond.tensors["pooled"], "time_ids": ids}
