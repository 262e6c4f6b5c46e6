"""The FLUX.1 family: `FluxTransformer2DModel`, rectified flow on packed VAE latents.

z is the VAE latent (B, C, H/8, W/8), drawn for a seed exactly as `FluxPipeline` draws it; each
pass packs it 2 x 2 into tokens (B, H/16 * W/16, 4C), the transformer predicts the velocity
u = eps - x0 at timestep t (= sigma; the model scales it by 1000 itself), and x0_hat = z - t * u.
The grid is the pipeline's: sigmas linspace(1, 1/N, N) shifted by mu, which grows with the number
of image tokens (`calculate_shift`). FLUX.1-dev takes the guidance scale as an input
(`guidance_embeds`: one pass per step); a model without it gets classifier-free guidance with the
empty prompt, as the pipeline's `true_cfg_scale` with `negative_prompt=""` does.
"""

from __future__ import annotations

import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from ..errors import UsageError
from .base import Conditioning, assign_weights
from .pipeline import PipelineFamily
from .schedules import FlowMatchSchedule, x0_from_output

MAX_SEQUENCE_LENGTH = 512  # T5 tokens, the pipeline's default


def add_guidance_embedder(net: torch.nn.Module, share: bool = False) -> torch.nn.Module:
    """A copy of a FLUX-style transformer with `guidance_embeds=True`, its guidance MLP's last layer
    zero-initialised so the copy starts as the original (Meng et al. 2023, §4.1); with `share`, its
    other weights are `net`'s own tensors."""
    new = type(net).from_config({**net.config, "guidance_embeds": True})
    first = next(net.parameters())
    torch.nn.Module.to(new, first.device, first.dtype)  # a plain move (ModelMixin.to warns)
    try:
        missing = assign_weights(new, net, share)
    except ValueError as e:
        raise UsageError(f"cannot add a guidance input to this transformer ({e})") from None
    if not missing or not all("guidance_embedder" in k for k in missing):
        raise UsageError(f"cannot add a guidance input to this transformer (missing {missing[:3]})")
    for name, p in new.named_parameters():
        if "guidance_embedder.linear_2" in name:
            torch.nn.init.zeros_(p)
    return new


def pipeline_timestep(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """t (= sigma) as the FLUX pipelines hand it over: sigma * 1000 in float32, cast to the latents'
    dtype, then / 1000 (the same rounding, so the same numbers)."""
    return (t.to(z.device, torch.float32) * 1000).to(z.dtype).expand(z.shape[0]) / 1000


class FluxFamily(PipelineFamily):
    name = "flux"
    pipeline_class = FluxPipeline
    patch = 2
    default_steps = 28  # FluxPipeline.__call__'s num_inference_steps

    def __init__(self, pipe, path=None, default_size=None):
        super().__init__(pipe, path, default_size)
        cfg = pipe.scheduler.config
        self.schedule = FlowMatchSchedule(
            cfg, mu=lambda size, steps: calculate_shift(
                self.tokens(size), cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)),
            linspace_sigmas=True, default_size=(self.default_size, self.default_size))

    @property
    def guidance_embedded(self) -> bool:
        return bool(self.denoiser.config.guidance_embeds)

    @property
    def default_guidance(self) -> float:
        # FluxPipeline.__call__ hands its guidance_scale 3.5 to a guidance-embedded (dev-style) model;
        # without guidance_embeds (schnell-style) its true_cfg_scale 1.0 runs one pass a step.
        return 3.5 if self.guidance_embedded else 1.0

    def encode(self, prompts: list[str]) -> Conditioning:
        hidden, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.device,
                                                    num_images_per_prompt=1, max_sequence_length=MAX_SEQUENCE_LENGTH)
        return Conditioning({"hidden": hidden.to(self.dtype), "pooled": pooled.to(self.dtype)})

    def noise_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        f = self.vae_factor
        return (batch, self.denoiser.config.in_channels // 4, height // f, width // f)

    def velocity(self, z, t, cond, guidance=None) -> torch.Tensor:
        """The raw transformer output u = eps - x0, unpacked to z's shape."""
        b, c, h, w = z.shape
        tokens = self.pipe._pack_latents(z, b, c, h, w)  # (B, h/2 * w/2, 4C)
        img_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, z.device, z.dtype)
        hidden = cond.tensors["hidden"]
        txt_ids = torch.zeros(hidden.shape[1], 3, device=z.device, dtype=z.dtype)
        if self.guidance_embedded:
            if guidance is None:
                raise ValueError("this model takes the guidance scale as an input: pass it")
            guidance = guidance.to(z.device, torch.float32).expand(b)
        else:
            guidance = None
        out = self.denoiser(hidden_states=tokens, timestep=pipeline_timestep(t, z), guidance=guidance,
                            pooled_projections=cond.tensors["pooled"], encoder_hidden_states=hidden,
                            txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        return self.pipe._unpack_latents(out, h * self.vae_factor, w * self.vae_factor, self.vae_factor)

    def x0(self, z, t, cond, guidance=None):
        u = self.velocity(z, t, cond, guidance)
        sigma = t.to(z.device, torch.float32).expand(z.shape[0]).view(-1, 1, 1, 1)
        return x0_from_output(u.float(), z.float(), 1 - sigma, sigma, "flow").to(z.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.pipe.vae.config
        return self.vae_decode(z / cfg.scaling_factor + cfg.shift_factor)

    def pipeline_kwargs(self, guidance: float) -> dict:
        if self.guidance_embedded:
            return {"guidance_scale": guidance}
        return {"true_cfg_scale": guidance, "negative_prompt": ""} if guidance != 1 else {}

    def from_pipeline_latents(self, latents, height, width):
        return self.pipe._unpack_latents(latents, height, width, self.vae_factor)

    def with_guidance_input(self, share: bool = False) -> FluxFamily:
        if self.guidance_embedded:
            return self.clone(share)
        return self._with_denoiser(add_guidance_embedder(self.denoiser, share))
