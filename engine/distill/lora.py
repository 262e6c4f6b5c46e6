"""LoRA students (peft through diffusers' adapter integration).

The LoRA layers train; modules the student adds to its teacher (the guidance embedding) train fully.
A LoRA student is saved merged (a plain model directory) or as an adapter directory that holds only
the LoRA weights and the new modules, and names its base model; loading fuses it onto the base.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from ..families.base import Family
from .recipes import LoraSpec

ADAPTER_WEIGHTS = "pytorch_lora_weights.safetensors"


def apply_lora(family: Family, spec: LoraSpec, train_fully: list[str]) -> list[torch.nn.Parameter]:
    """Add LoRA layers to the denoiser; freeze everything else except parameters whose names are in
    `train_fully`. Returns the trainable parameters."""
    net = family.denoiser
    net.add_adapter(LoraConfig(r=spec.rank, lora_alpha=spec.alpha or spec.rank, init_lora_weights=True,
                               target_modules=list(spec.target_modules or family.lora_targets)))
    for name, p in net.named_parameters():
        if name in train_fully:
            p.requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]


def merge_lora(family: Family) -> None:
    """Fold the LoRA weights into the base weights and remove the LoRA layers (a plain model)."""
    family.denoiser.fuse_lora()
    family.denoiser.unload_lora()


def save_adapter_student(family: Family, path: Path, base: Path, train_fully: list[str], extra: dict) -> None:
    """Write an adapter directory: LoRA weights, fully trained new modules, and lab.json naming the base."""
    path.mkdir(parents=True, exist_ok=True)
    net = family.denoiser
    net.save_lora_adapter(path / "adapter", weight_name=ADAPTER_WEIGHTS)
    state = net.state_dict()
    new = {k: state[k].detach().float().contiguous() for k in train_fully}
    if new:
        save_file(new, path / "new_modules.safetensors")
    meta = {"family": family.name, "base": os.path.relpath(base.resolve(), path.resolve()),
            "guidance_input": family.guidance_embedded, **extra}
    (path / "lab.json").write_text(json.dumps(meta, indent=1))


def load_adapter_student(base: Family, path: Path, meta: dict) -> Family:
    """The student of an adapter directory: its base, plus new modules, plus the fused LoRA weights."""
    student = base.with_guidance_input() if meta.get("guidance_input") else base.clone()
    student.path = path
    if (path / "new_modules.safetensors").exists():
        missing, unexpected = student.denoiser.load_state_dict(load_file(path / "new_modules.safetensors"), strict=False)
        if unexpected:
            raise ValueError(f"{path}: new_modules.safetensors has unknown keys {unexpected[:3]}")
    student.denoiser.load_lora_adapter(str(path / "adapter"), prefix=None, weight_name=ADAPTER_WEIGHTS)
    merge_lora(student)
    return student
