"""Adding and removing forward hooks so that a switched-off speed feature leaves no trace.

Hooks go through diffusers' `HookRegistry` (the mechanism its own caches and layerwise casting
use). Removing a hook there leaves an empty registry and an instance-level `forward` behind; `tidy`
takes both away once no hook is left, so the module is again exactly what it was.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook


def add_hook(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def remove_hook(module: torch.nn.Module, name: str) -> None:
    registry = getattr(module, "_diffusers_hook", None)
    if registry is not None:
        registry.remove_hook(name, recurse=False)
    tidy(module)


def has_hook(module: torch.nn.Module, name: str) -> bool:
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(name) is not None


def tidy(model: torch.nn.Module) -> None:
    """Drop empty hook registries, and the instance `forward` they left, from every submodule."""
    for module in model.modules():
        registry = module.__dict__.get("_diffusers_hook")
        if registry is None or registry.hooks:
            continue
        del module._diffusers_hook
        fwd = module.__dict__.get("forward")
        if fwd is not None and getattr(fwd, "__self__", None) is module \
                and getattr(fwd, "__func__", None) is type(module).forward:
            del module.forward


def is_clean(model: torch.nn.Module) -> bool:
    """True when no submodule carries a hook registry or an instance-level forward."""
    return not any("_diffusers_hook" in m.__dict__ or "forward" in m.__dict__ for m in model.modules())


# -- batch rows ---------------------------------------------------------------------------------


def take_rows(value: Any, rows: torch.Tensor, n: int, name: str = "") -> Any:
    """The rows `rows` of every tensor in `value` whose leading axis is the batch (length n)."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] != n:
            return value
        if name in ("img_ids", "txt_ids") and value.dim() < 3:  # FLUX.1 position ids (seq, 3): no batch axis
            return value  # (SDXL's `time_ids` (B, 6) do have one)
        return value[rows.to(value.device)]
    if isinstance(value, dict):
        return type(value)({k: take_rows(v, rows, n, k) for k, v in value.items()})
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(take_rows(v, rows, n, name) for v in value)
    return value


def flatten(output: Any) -> tuple[list[torch.Tensor], Any]:
    """A model output as a list of tensors, and a function that rebuilds the same structure."""
    if isinstance(output, torch.Tensor):
        return [output], lambda ts: ts[0]
    if isinstance(output, dict):  # diffusers' BaseOutput dataclasses are dicts
        keys = list(output.keys())
        return [output[k] for k in keys], lambda ts: type(output)(**dict(zip(keys, ts)))
    if isinstance(output, (tuple, list)):
        return list(output), lambda ts: type(output)(ts)
    raise TypeError(f"cannot cache a denoiser output of type {type(output).__name__}")
