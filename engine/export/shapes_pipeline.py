"""A diffusers pipeline for the lab's embedded shapes-world models, written beside an exported model
(as pipeline.py, and as text_encoder/shapes_pipeline.py for its text encoder) so that

    DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)

loads and samples it with diffusers alone. It is self-contained on purpose: torch and diffusers only.

The model is a pixel-space rectified flow: 32 x 32 RGB images packed 2 x 2 into 16 x 16 x 12 for a
`UNet2DConditionModel` that predicts the velocity u = eps - x0 at timestep 1000 t; sampling is
`FlowMatchEulerDiscreteScheduler` on sigmas linspace(1, 0, N + 1), classifier-free guidance with
the empty prompt, or one pass where the UNet takes the guidance scale (`time_cond_proj_dim`).
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

PAD, BOS, UNK = 0, 1, 2
SPECIALS = 3
PACK = 2


class ShapesTextEncoder(ModelMixin, ConfigMixin):
    """Word tokens (lower-case words and digits of the prompt) -> a small transformer -> (B, L, width)."""

    @register_to_config
    def __init__(self, vocab: list[str], width: int = 128, layers: int = 2, heads: int = 4, max_len: int = 32):
        super().__init__()
        self.index = {w: i + SPECIALS for i, w in enumerate(vocab)}
        self.embed = nn.Embedding(len(vocab) + SPECIALS, width)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [[BOS] + [self.index.get(w, UNK) for w in re.findall(r"[a-z]+|[0-9]", p.lower())] for p in prompts]
        rows = [r[: self.config.max_len] for r in rows]
        ids = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids.to(self.device), (ids != PAD).to(self.device)

    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(prompts)
        h = self.blocks(self.embed(ids) + self.pos[: ids.shape[1]], src_key_padding_mask=~mask)
        return self.norm(h), mask


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([x, x.new_zeros((x.shape[0], n - x.shape[1], *x.shape[2:]))], 1)


class ShapesPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    model_cpu_offload_seq = "text_encoder->unet"
    _lora_loadable_modules = ["unet"]

    @register_to_config
    def __init__(self, unet: UNet2DConditionModel, text_encoder: ModelMixin,  # a ShapesTextEncoder
                 scheduler: FlowMatchEulerDiscreteScheduler, guidance_embedding: str = "lcm"):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, scheduler=scheduler)

    def guidance_features(self, s: torch.Tensor) -> torch.Tensor:
        """The scale as the UNet's `timestep_cond` was trained to read it."""
        dim = self.unet.config.time_cond_proj_dim
        if self.config.guidance_embedding == "lcm":
            return self.get_guidance_scale_embedding(s - 1, dim)
        return get_timestep_embedding(s * 100.0, dim, flip_sin_to_cos=True, downscale_freq_shift=0)

    @staticmethod
    def get_guidance_scale_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
        """LCM's embedding of w, as diffusers' Stable Diffusion pipelines compute it."""
        w = w.float() * 1000.0
        freqs = torch.exp(torch.arange(dim // 2, dtype=torch.float32) * -(np.log(10000.0) / (dim // 2 - 1)))
        emb = w[:, None] * freqs[None, :]
        return F.pad(torch.cat([torch.sin(emb), torch.cos(emb)], 1), (0, dim % 2))

    def velocity(self, z, t, hidden, mask, cond):
        out = self.unet(F.pixel_unshuffle(z, PACK), t * 1000.0, encoder_hidden_states=hidden,
                        encoder_attention_mask=mask, timestep_cond=cond).sample
        return F.pixel_shuffle(out, PACK)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int = 50, guidance_scale: float = 5.0,
                 generator: torch.Generator | list[torch.Generator] | None = None, output_type: str = "pil",
                 return_dict: bool = True):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        b, size, dtype = len(prompts), self.unet.config.sample_size * PACK, self.unet.dtype
        generators = generator if isinstance(generator, list) else [generator] * b
        z = torch.cat([torch.randn((1, 3, size, size), generator=g) for g in generators]).to(self.device, dtype)
        hidden, mask = self.text_encoder(prompts)
        embedded = self.unet.config.time_cond_proj_dim is not None
        two_pass = guidance_scale != 1 and not embedded
        if two_pass:  # the unconditional branch: the empty prompt, padded to the prompts' length
            h0, m0 = self.text_encoder([""] * b)
            n = max(hidden.shape[1], h0.shape[1])
            hidden, mask = torch.cat([_pad(h0, n), _pad(hidden, n)]), torch.cat([_pad(m0, n), _pad(mask, n)])
        hidden = hidden.to(dtype)
        cond = None
        if embedded:  # one pass: the scale is an input
            cond = self.guidance_features(torch.full((b,), float(guidance_scale))).to(self.device, dtype)
        sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
        self.scheduler.set_timesteps(sigmas=sigmas, device=self.device)
        for i in self.progress_bar(range(num_inference_steps)):
            t = self.scheduler.sigmas[i].to(self.device, torch.float32).expand(b)
            if two_pass:
                u0, u1 = self.velocity(torch.cat([z, z]), torch.cat([t, t]), hidden, mask, None).chunk(2)
                u = u0 + guidance_scale * (u1 - u0)
            else:
                u = self.velocity(z, t, hidden, mask, cond)
            z = self.scheduler.step(u, self.scheduler.timesteps[i], z, return_dict=False)[0].to(dtype)
        images = ((z.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "pil":
            images = [Image.fromarray((im * 255).round().astype(np.uint8)) for im in images]
        elif output_type == "pt":
            images = torch.from_numpy(images)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
