"""The embedded family: a small pixel-space rectified-flow UNet for the shapes world.

The denoiser is diffusers' `UNet2DConditionModel` (so diffusers' LoRA loading, hooks and layerwise
casting apply), run on 32 x 32 RGB images packed 2 x 2 into 16 x 16 x 12 with pixel_unshuffle.
It predicts the flow velocity u = eps - x0, so x0_hat = z_t - t * u (alpha_t = 1 - t, sigma_t = t).
The text encoder is the lab's own small transformer (engine/text.py), trained with it.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from ..errors import UsageError
from ..world import IMAGE_SIZE, describe, vocabulary
from ..world.judge import Judge
from ..world.judge import shipped as shipped_judge
from ..world.scene import sample_scene
from ..world.text import TextEncoder, TextEncoderConfig
from .adapter import check_base, load_adapter_student
from .base import Conditioning, Family, FlowSchedule, assign_weights, shared_copy
from .guidance import GUIDANCE_DIM, convention_of, timestep_cond

PACK = 2  # pixel_unshuffle factor
TIME_SCALE = 1000.0  # the UNet's sinusoidal timestep embedding expects timesteps in [0, 1000]


@dataclass
class EmbeddedConfig:
    image_size: int = IMAGE_SIZE  # pixels per side
    channels: tuple[int, ...] = (64, 128, 128)  # UNet block widths
    heads: int = 4  # attention heads in the cross-attention blocks
    text_width: int = 128  # text encoder width = cross-attention width
    text_layers: int = 2
    shift: float = 1.0  # sampling-time shift of the flow schedule (1 = uniform grid)


def build_unet(cfg: EmbeddedConfig, time_cond_proj_dim: int | None = None) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=cfg.image_size // PACK,
        in_channels=3 * PACK * PACK,
        out_channels=3 * PACK * PACK,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=tuple(cfg.channels),
        layers_per_block=1,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=cfg.heads,
        norm_num_groups=32,
        time_cond_proj_dim=time_cond_proj_dim,
    )


class EmbeddedFamily(Family):
    name = "embedded"
    default_steps = 50  # the shipped teacher's reference setting (README, docs): 50 steps at guidance 5
    default_guidance = 5.0

    def __init__(self, unet: UNet2DConditionModel, text_encoder: TextEncoder, cfg: EmbeddedConfig,
                 path: Path | None = None):
        self.denoiser = unet
        self.text_encoder = text_encoder
        self.cfg = cfg
        self.schedule = FlowSchedule(cfg.shift)
        self.path = path

    @property
    def guidance_embedded(self) -> bool:
        return self.denoiser.config.time_cond_proj_dim is not None

    @property
    def default_size(self) -> int:
        return self.cfg.image_size

    @classmethod
    def new(cls, cfg: EmbeddedConfig = EmbeddedConfig()) -> EmbeddedFamily:
        text = TextEncoder(TextEncoderConfig(vocab=vocabulary(), width=cfg.text_width, layers=cfg.text_layers))
        return cls(build_unet(cfg), text, cfg)

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> EmbeddedFamily:
        meta = json.loads((path / "lab.json").read_text())
        if "base" in meta:  # a LoRA student stored as an adapter over its base model
            return load_adapter_student(cls.load(check_base(path, meta), "cpu", torch.float32),
                                        path, meta).to(device, dtype)
        cfg = EmbeddedConfig(**meta["config"])
        unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=torch.float32)
        text = TextEncoder.load(path / "text_encoder")
        family = cls(unet.eval(), text.eval(), cfg, path)
        family.guidance_embedding = convention_of(meta)
        return family.to(device, dtype)

    def to(self, device, dtype: torch.dtype | None = None) -> EmbeddedFamily:
        self.denoiser.to(device)
        self.text_encoder.to(device)
        if dtype is not None and dtype != self.dtype:
            self.denoiser.to(dtype=dtype)
            self.text_encoder.to(dtype=dtype)
        return self

    def save(self, path: Path, *, dtype: torch.dtype = torch.float16, extra: dict | None = None) -> None:
        """Write the model directory (weights stored in `dtype`; loading upcasts)."""
        path.mkdir(parents=True, exist_ok=True)
        # nn.Module.to: a plain cast of a copy for storage (ModelMixin.to warns about upcast modules,
        # of which this UNet has none).
        torch.nn.Module.to(copy.deepcopy(self.denoiser), dtype=dtype).save_pretrained(path / "unet")
        self.text_encoder.save(path / "text_encoder", dtype)
        (path / "lab.json").write_text(json.dumps({"family": self.name, "config": self.config_json(),
                                                   **self.guidance_meta(), **(extra or {})}, indent=1))

    def config_json(self) -> dict:
        cfg = asdict(self.cfg)
        cfg["channels"] = list(cfg["channels"])
        return cfg

    def clone(self, share: bool = False) -> EmbeddedFamily:
        # The text encoder is never trained: a shared copy shares it whole.
        fam = EmbeddedFamily(shared_copy(self.denoiser) if share else copy.deepcopy(self.denoiser),
                             self.text_encoder if share else copy.deepcopy(self.text_encoder), self.cfg, self.path)
        fam.guidance_embedding = self.guidance_embedding
        return fam

    def with_guidance_input(self, share: bool = False) -> EmbeddedFamily:
        if self.guidance_embedded:
            return self.clone(share)
        # nn.Module.to: a plain move (ModelMixin.to warns about upcast modules, of which it has none)
        unet = torch.nn.Module.to(build_unet(self.cfg, time_cond_proj_dim=GUIDANCE_DIM), self.device, self.dtype)
        missing = assign_weights(unet, self.denoiser, share)
        assert set(missing) == {"time_embedding.cond_proj.weight"}, missing
        torch.nn.init.zeros_(unet.time_embedding.cond_proj.weight)
        return EmbeddedFamily(unet, self.text_encoder if share else copy.deepcopy(self.text_encoder), self.cfg,
                              self.path)

    def training_prompts(self, rng: random.Random, n: int) -> list[str]:
        return [describe(sample_scene(rng, "train"), rng)[0] for _ in range(n)]

    def judge(self) -> Judge:
        return shipped_judge(str(self.device))

    def encode(self, prompts: list[str]) -> Conditioning:
        hidden, mask = self.text_encoder.encode(prompts)
        return Conditioning({"hidden": hidden.to(self.dtype), "mask": mask})

    def noise_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        return (batch, 3, height, width)

    def check_size(self, height: int, width: int) -> None:
        s = self.cfg.image_size
        if (height, width) != (s, s):
            raise UsageError(f"height and width must be {s} for the embedded model, got {height}x{width}")

    def velocity(self, z: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                 guidance: torch.Tensor | None = None) -> torch.Tensor:
        """The raw network output u = eps - x0, in pixel space (B, 3, H, W)."""
        t = t.to(z.device, torch.float32).expand(z.shape[0])
        extra = timestep_cond(self, z, guidance)
        out = self.denoiser(F.pixel_unshuffle(z, PACK), t * TIME_SCALE,
                            encoder_hidden_states=cond.tensors["hidden"],
                            encoder_attention_mask=cond.tensors["mask"], **extra).sample
        return F.pixel_shuffle(out, PACK)

    def x0(self, z, t, cond, guidance=None):
        u = self.velocity(z, t, cond, guidance)
        return z - t.to(z.dtype).view(-1, 1, 1, 1) * u

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return ((z.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
