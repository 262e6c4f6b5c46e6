"""What every family backed by a diffusers pipeline shares: loading, saving, copying, decoding.

The adapter holds the pipeline (text encoders, tokenizers, VAE, scheduler config) and reuses its
own `encode_prompt`, so prompts are encoded exactly as diffusers does. `denoiser` starts as the
pipeline's UNet or transformer; a student replaces it (`clone`, `with_guidance_input`) and the
rest of the pipeline is shared, read-only.
"""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from ..errors import UsageError
from .adapter import check_base, load_adapter_student
from .base import Family, shared_copy
from .guidance import convention_of


class PipelineFamily(Family):
    pipeline_class: type[DiffusionPipeline]  # the diffusers pipeline this adapter serves
    denoiser_name: str = "transformer"  # the pipeline component that runs once per pass
    patch: int = 1  # latent pixels per token side (2 where latents are packed 2x2 into tokens)
    load_kwargs: dict = {}  # extra from_pretrained arguments

    def __init__(self, pipe: DiffusionPipeline, path: Path | None = None, default_size: int | None = None):
        self.pipe = pipe
        pipe.set_progress_bar_config(disable=True)
        self.denoiser = getattr(pipe, self.denoiser_name)
        self.path = path
        self.vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self._default_size = default_size

    @property
    def native_size(self) -> int:
        """The image side the model was made for: its pipeline's default sample size in pixels."""
        return self.pipe.default_sample_size * self.vae_factor

    @property
    def default_size(self) -> int:
        return self._default_size or self.native_size

    def tokens(self, size: tuple[int, int]) -> int:
        """Image tokens of a (height, width) image: what a transformer's dynamic shift grows with."""
        m = self.size_multiple
        return (size[0] // m) * (size[1] // m)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: the VAE's downsampling times the patch size."""
        return self.vae_factor * self.patch

    def check_size(self, height: int, width: int) -> None:
        m = self.size_multiple
        if height % m or width % m:
            raise UsageError(f"height and width must be multiples of {m} for this {self.name} model "
                             f"(VAE factor {self.vae_factor} x patch {self.patch}), got {height}x{width}")

    # -- loading and saving --

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> PipelineFamily:
        meta = json.loads((path / "lab.json").read_text()) if (path / "lab.json").exists() else {}
        if "base" in meta:  # a LoRA student stored as an adapter over its base model
            base = cls.load(check_base(path, meta), device, dtype)
            return load_adapter_student(base, path, meta)
        pipe = cls.pipeline_class.from_pretrained(path, dtype=dtype, local_files_only=True, **cls.load_kwargs)
        family = cls(pipe.to(device), path, meta.get("default_size"))
        family.guidance_embedding = convention_of(meta)
        return family

    def to(self, device, dtype: torch.dtype | None = None) -> PipelineFamily:
        self.pipe.to(device, dtype) if dtype is not None else self.pipe.to(device)
        self.denoiser.to(device)
        if dtype is not None:
            self.denoiser.to(dtype=dtype)
        return self

    def pipeline(self, scheduler=None) -> DiffusionPipeline:
        """A pipeline object with this family's denoiser and scheduler (shares the other modules)."""
        parts = dict(self.pipe.components)
        parts[self.denoiser_name] = self.denoiser
        parts["scheduler"] = scheduler or self.make_scheduler()
        for name in inspect.signature(type(self.pipe).__init__).parameters:  # settings such as is_distilled
            if name not in parts and name in self.pipe.config:
                parts[name] = self.pipe.config[name]
        return type(self.pipe)(**parts)

    def make_scheduler(self):
        """The scheduler a saved directory gets (the pipeline's own, unless the family changed it)."""
        return type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)

    # -- what the diffusers pipeline does differently (for engine/families/parity.py) --

    def equivalent_scheduler(self):
        """The diffusers scheduler whose steps are the lab's sampler on this family's grid."""
        return self.make_scheduler()

    def pipeline_kwargs(self, guidance: float) -> dict:
        """Pipeline call arguments that give the lab's guidance `guidance`."""
        return {"guidance_scale": guidance}

    def from_pipeline_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The pipeline's latents during its loop -> the lab's z."""
        return latents

    def save(self, path: Path, *, dtype: torch.dtype = torch.float16, extra: dict | None = None) -> None:
        """Write a diffusers directory (model_index.json) plus lab.json; the denoiser is stored in `dtype`,
        with the scheduler whose steps are the lab's sampler (what diffusers then samples it with)."""
        pipe = self.pipeline(scheduler=self.equivalent_scheduler())
        if self.dtype != dtype:
            # nn.Module.to: a plain cast of a copy for storage (ModelMixin.to refuses some casts).
            setattr(pipe, self.denoiser_name, torch.nn.Module.to(copy.deepcopy(self.denoiser), dtype=dtype))
        path.mkdir(parents=True, exist_ok=True)
        pipe.save_pretrained(path)
        meta = {"family": self.name, "default_size": self.default_size, **self.guidance_meta(), **(extra or {})}
        (path / "lab.json").write_text(json.dumps(meta, indent=1))

    def clone(self, share: bool = False) -> PipelineFamily:
        fam = copy.copy(self)
        fam.denoiser = shared_copy(self.denoiser) if share else copy.deepcopy(self.denoiser)
        return fam

    def _with_denoiser(self, denoiser: torch.nn.Module) -> PipelineFamily:
        fam = copy.copy(self)
        fam.denoiser = denoiser.to(self.device, self.dtype).eval()
        return fam

    # -- decoding --

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents -> images (B, H, W, 3) uint8 on the CPU, as the pipeline's image processor does."""
        vae = self.pipe.vae
        upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        if upcast:  # SDXL's VAE overflows in float16; its pipeline decodes in float32 too
            vae.to(torch.float32)
        try:
            x = vae.decode(latents.to(vae.device, vae.dtype), return_dict=False)[0]
        finally:
            if upcast:
                vae.to(torch.float16)
        return (((x.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())
