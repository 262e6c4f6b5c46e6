"""LoRA students stored as adapters: a directory holding only the LoRA weights and the modules the
student added (the guidance embedding), naming its base model. Loading builds the student from the
base and fuses the LoRA weights in (peft through diffusers' adapter integration); training them is
engine/distill/lora.py."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import UsageError
from .base import Family
from .guidance import convention_of

ADAPTER_WEIGHTS = "pytorch_lora_weights.safetensors"
NEW_MODULES = "new_modules.safetensors"


def merge_lora(family: Family) -> None:
    """Fold the LoRA weights into the base weights and remove the LoRA layers (a plain model). A
    student that shares its base with its teacher first takes its own copy of the weights the LoRA
    layers adapt, so the merge leaves the teacher as it is."""
    if getattr(family, "shares_base", False):
        for module in family.denoiser.modules():
            base = getattr(module, "base_layer", None)
            if isinstance(base, torch.nn.Module) and isinstance(getattr(base, "weight", None), torch.nn.Parameter):
                base.weight = torch.nn.Parameter(base.weight.detach().clone(), requires_grad=False)
        family.shares_base = False
    family.denoiser.fuse_lora()
    family.denoiser.unload_lora()


DENOISER_FOLDERS = ("unet", "transformer")


def base_path(path: Path, meta: dict) -> Path:
    """The base model of an adapter directory: an absolute path (a relative one, from the adapter
    directory, in adapters saved before bases were named absolutely)."""
    return (path / meta["base"]).resolve()


@lru_cache(maxsize=16)
def _digest(files: tuple[tuple[str, int, float], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in files:
        h.update(Path(name).name.encode())
        with open(name, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def weights_digest(model: Path) -> str:
    """sha256 of a model directory's denoiser weights (what an adapter was trained on), cached per
    file size and modification time."""
    files = sorted(p for d in DENOISER_FOLDERS for p in (model / d).glob("*.safetensors"))
    return _digest(tuple((str(p), p.stat().st_size, p.stat().st_mtime) for p in files))


def check_base(path: Path, meta: dict) -> Path:
    """The adapter's base, refused in one line if it is gone or its weights changed since training."""
    base = base_path(path, meta)
    if not base.is_dir():
        raise UsageError(f"{path}: its base model {base} is not there (moved or deleted); the adapter "
                         f"needs it{' (' + meta['base_model'] + ')' if meta.get('base_model') else ''}")
    if meta.get("base_sha256") and weights_digest(base) != meta["base_sha256"]:
        raise UsageError(f"{path}: the weights of its base model {base} changed since the adapter was trained "
                         f"(sha256 {weights_digest(base)[:12]}, trained on {meta['base_sha256'][:12]}); "
                         f"an adapter only holds on the weights it was trained on")
    return base


def load_adapter_student(base: Family, path: Path, meta: dict) -> Family:
    """The student of an adapter directory: its base, plus new modules, plus the fused LoRA weights."""
    student = base.with_guidance_input() if meta.get("guidance_input") else base.clone()
    student.path = path
    student.guidance_embedding = convention_of(meta)
    if (path / NEW_MODULES).exists():
        _, unexpected = student.denoiser.load_state_dict(load_file(path / NEW_MODULES), strict=False)
        if unexpected:
            raise ValueError(f"{path}: {NEW_MODULES} has unknown keys {unexpected[:3]}")
    student.denoiser.load_lora_adapter(str(path / "adapter"), prefix=None, weight_name=ADAPTER_WEIGHTS)
    merge_lora(student)
    return student
