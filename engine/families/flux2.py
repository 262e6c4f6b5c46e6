"""The FLUX.2 klein family: `Flux2Transformer2DModel` with a Qwen3 text encoder, rectified flow.

z is the patchified, batch-normalised VAE latent (B, 4C, H/16, W/16), drawn for a seed exactly as
`Flux2KleinPipeline` draws it; each pass flattens it into tokens (B, H/16 * W/16, 4C) with 4-D
position ids, the transformer predicts u = eps - x0 at t (= sigma), and x0_hat = z - t * u. The
prompt is the stack of three Qwen3 hidden layers (the pipeline's `encode_prompt`). The grid is the
pipeline's: sigmas linspace(1, 1/N, N) shifted by the empirical mu of image tokens and steps.
Klein *base* uses classifier-free guidance with the empty prompt; a step-distilled klein
(`is_distilled`) runs one pass per step and ignores the scale, as its pipeline does.
"""

from __future__ import annotations

import torch
from diffusers import Flux2KleinPipeline
from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

from ..errors import UsageError
from .base import Conditioning
from .flux import MAX_SEQUENCE_LENGTH, add_guidance_embedder, pipeline_timestep
from .pipeline import PipelineFamily
from .schedules import FlowMatchSchedule, x0_from_output

TEXT_LAYERS = (9, 18, 27)  # Qwen3 hidden states stacked into the prompt embedding (the pipeline's default)


class Flux2Family(PipelineFamily):
    name = "flux2"
    pipeline_class = Flux2KleinPipeline
    patch = 2
    default_steps = 50  # Flux2KleinPipeline.__call__'s num_inference_steps

    def __init__(self, pipe, path=None, default_size=None):
        super().__init__(pipe, path, default_size)
        self.schedule = FlowMatchSchedule(
            pipe.scheduler.config, mu=lambda size, steps: compute_empirical_mu(self.tokens(size), steps),
            linspace_sigmas=True, default_size=(self.default_size, self.default_size))

    @property
    def guidance_embedded(self) -> bool:
        # One pass per step: the model takes the scale as an input, or (distilled klein) needs none.
        return bool(self.denoiser.config.guidance_embeds or self.pipe.config.get("is_distilled", False))

    @property
    def default_guidance(self) -> float:
        # Flux2KleinPipeline.__call__'s guidance_scale 4.0; a step-distilled klein (is_distilled) ignores
        # the scale and runs one pass a step, which the lab records as guidance 1.
        return 1.0 if self.pipe.config.get("is_distilled", False) else 4.0

    def encode(self, prompts: list[str]) -> Conditioning:
        hidden, _ = self.pipe.encode_prompt(prompt=prompts, device=self.device, num_images_per_prompt=1,
                                            max_sequence_length=MAX_SEQUENCE_LENGTH,
                                            text_encoder_out_layers=TEXT_LAYERS)
        return Conditioning({"hidden": hidden.to(self.dtype)})

    def noise_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        m = self.size_multiple
        return (batch, self.denoiser.config.in_channels, height // m, width // m)

    def velocity(self, z, t, cond, guidance=None) -> torch.Tensor:
        b, c, h, w = z.shape
        tokens = self.pipe._pack_latents(z)  # (B, h * w, C)
        img_ids = self.pipe._prepare_latent_ids(z).to(z.device)
        hidden = cond.tensors["hidden"]
        txt_ids = self.pipe._prepare_text_ids(hidden).to(z.device)
        if self.denoiser.config.guidance_embeds and guidance is not None:
            guidance = guidance.to(z.device, torch.float32).expand(b)
        else:
            guidance = None
        out = self.denoiser(hidden_states=tokens, timestep=pipeline_timestep(t, z), guidance=guidance,
                            encoder_hidden_states=hidden, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        return out.permute(0, 2, 1).reshape(b, c, h, w)

    def x0(self, z, t, cond, guidance=None):
        u = self.velocity(z, t, cond, guidance)
        sigma = t.to(z.device, torch.float32).expand(z.shape[0]).view(-1, 1, 1, 1)
        return x0_from_output(u.float(), z.float(), 1 - sigma, sigma, "flow").to(z.dtype)

    def vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        """z -> the VAE's latent (B, C, H/8, W/8): undo the batch norm, then the 2 x 2 patching."""
        vae = self.pipe.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(z)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(z)
        return self.pipe._unpatchify_latents(z * std + mean)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae_decode(self.vae_latents(z))

    def pipeline_kwargs(self, guidance: float) -> dict:
        if self.denoiser.config.guidance_embeds:  # Flux2KleinPipeline never passes a guidance input
            raise UsageError("Flux2KleinPipeline never passes a guidance input, so no stock pipeline runs this "
                             "guidance student as the lab does")
        return {"guidance_scale": guidance}

    def from_pipeline_latents(self, latents, height, width):
        m = self.size_multiple
        return latents.permute(0, 2, 1).reshape(latents.shape[0], -1, height // m, width // m)

    def with_guidance_input(self, share: bool = False) -> Flux2Family:
        if self.denoiser.config.guidance_embeds:
            return self.clone(share)
        return self._with_denoiser(add_guidance_embedder(self.denoiser, share))
