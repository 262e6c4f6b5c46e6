"""LoRA students (peft through diffusers' adapter integration).

The LoRA layers train; modules the student adds to its teacher (the guidance embedding) train fully.
A LoRA student is saved merged (a plain model directory) or as an adapter directory that holds only
the LoRA weights and the new modules, and names its base model (engine/families/adapter.py loads it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import save_file

from ..families.adapter import ADAPTER_WEIGHTS, NEW_MODULES, weights_digest
from ..families.base import Family
from .recipes import LoraSpec


def apply_lora(family: Family, spec: LoraSpec, train_fully: list[str]) -> list[torch.nn.Parameter]:
    """Add LoRA layers to the denoiser; freeze everything else except parameters whose names are in
    `train_fully`. Returns the trainable parameters."""
    return apply_lora_to(family.denoiser, spec, train_fully, family.lora_targets)


def apply_lora_to(net: torch.nn.Module, spec: LoraSpec, train_fully: list[str],
                  targets: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """`apply_lora` on a denoiser (also one on the meta device, for a memory plan)."""
    net.add_adapter(LoraConfig(r=spec.rank, lora_alpha=spec.alpha or spec.rank, init_lora_weights=True,
                               target_modules=list(spec.target_modules or targets)))
    for name, p in net.named_parameters():
        if name in train_fully:
            p.requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]


def save_adapter_student(family: Family, path: Path, base: Path, train_fully: list[str], extra: dict) -> None:
    """Write an adapter directory: LoRA weights, fully trained new modules, and lab.json naming the base."""
    path.mkdir(parents=True, exist_ok=True)
    net = family.denoiser
    net.save_lora_adapter(path / "adapter", weight_name=ADAPTER_WEIGHTS)
    state = net.state_dict()
    new = {k: state[k].detach().float().contiguous() for k in train_fully}
    if new:
        save_file(new, path / NEW_MODULES)
    meta = {"family": family.name, "base": str(base.resolve()), "base_sha256": weights_digest(base),
            "base_model": extra.get("parent"),
            "guidance_input": family.guidance_embedded, **family.guidance_meta(), **extra}
    (path / "lab.json").write_text(json.dumps(meta, indent=1))
