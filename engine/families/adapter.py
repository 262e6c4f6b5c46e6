"""LoRA students stored as adapters: a directory holding only the LoRA weights and the modules the
student added (the guidance embedding), naming its base model. Loading builds the student from the
base and fuses the LoRA weights in (peft through diffusers' adapter integration); training them is
engine/distill/lora.py."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from .base import Family

ADAPTER_WEIGHTS = "pytorch_lora_weights.safetensors"
NEW_MODULES = "new_modules.safetensors"


def merge_lora(family: Family) -> None:
    """Fold the LoRA weights into the base weights and remove the LoRA layers (a plain model)."""
    family.denoiser.fuse_lora()
    family.denoiser.unload_lora()


def load_adapter_student(base: Family, path: Path, meta: dict) -> Family:
    """The student of an adapter directory: its base, plus new modules, plus the fused LoRA weights."""
    student = base.with_guidance_input() if meta.get("guidance_input") else base.clone()
    student.path = path
    if (path / NEW_MODULES).exists():
        _, unexpected = student.denoiser.load_state_dict(load_file(path / NEW_MODULES), strict=False)
        if unexpected:
            raise ValueError(f"{path}: {NEW_MODULES} has unknown keys {unexpected[:3]}")
    student.denoiser.load_lora_adapter(str(path / "adapter"), prefix=None, weight_name=ADAPTER_WEIGHTS)
    merge_lora(student)
    return student
