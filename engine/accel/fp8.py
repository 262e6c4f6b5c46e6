"""FP8 for a family's denoiser, as modes (DESIGN.md §6).

- `weights`: linear and convolution weights stored in float8_e4m3fn and cast up to the model's
  dtype one layer at a time for compute (diffusers' layerwise-casting hook). Any device; saves
  memory, not time.
- `compute`: every linear layer whose sides are multiples of 16 runs as a float8 matmul
  (`torch._scaled_mm`, per-tensor scales). Needs a CUDA GPU of compute capability 8.9 or more
  (Ada, Hopper, Blackwell), where the tensor cores do float8; elsewhere it is refused.

Switching off restores the original weights exactly, from a copy kept in CPU memory (a float8
round trip loses precision), so the accelerator memory saving is real while the mode is on.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers.hooks.layerwise_casting import LayerwiseCastingHook

from ..errors import UsageError
from .hooks import add_hook, remove_hook
from .options import FP8_MODES

HOOK = "lab_fp8_weights"
E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
CASTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Embedding)
# Kept in full precision: the thin first and last layers that map to and from pixel or latent space
# (and the output norm's modulation), where a float8 error goes straight into the image. Norm layers
# themselves are never cast; the modulation linears inside adaptive norms (a large share of a FLUX
# block) are.
SKIP = (r"^conv_in$", r"^conv_out$", r"^proj_in$", r"^proj_out$", r"^x_embedder$", r"^norm_out", "pos_embed",
        "patch_embed")


@dataclass
class FP8Config:
    mode: str = "off"  # off | weights | compute
    skip: tuple[str, ...] = SKIP  # regexes of module names kept in the model's dtype


_SAVED: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def param_mem_mb(model: nn.Module) -> float:
    """Memory held by the model's parameters (its weights, not buffers such as position tables), in MiB."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def compute_capable(device: torch.device) -> str | None:
    """Why float8 compute cannot run on `device`, or None when it can."""
    if device.type != "cuda":
        return (f"FP8 compute needs a CUDA GPU of compute capability >= 8.9 (Ada, Hopper or newer); this model is on "
                f"{device.type}. Use 'weights' to store weights in float8 on any device")
    cc = torch.cuda.get_device_capability(device)
    if cc < (8, 9):
        return (f"FP8 compute needs compute capability >= 8.9; {torch.cuda.get_device_name(device)} has "
                f"{cc[0]}.{cc[1]}. Use 'weights' to store weights in float8")
    return None


def _targets(model: nn.Module, skip: tuple[str, ...], kinds) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, kinds) and not any(re.search(p, name) for p in skip)]


class _StoreInFloat8(LayerwiseCastingHook):
    """diffusers' layerwise casting; its switch-off is ours (restoring the saved weights)."""

    def deinitalize_hook(self, module):
        return module


class Float8Linear(nn.Module):
    """y = x W^T + b with x and W in float8_e4m3fn, each with one scale (torch._scaled_mm)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        self.out_dtype = w.dtype
        scale = (w.abs().max().float() / E4M3_MAX).clamp_min(1e-12).reshape(())
        self.register_buffer("w_scale", scale)  # a buffer: the model's parameters keep its compute dtype
        self.weight_fp8 = nn.Parameter((w.float() / scale).to(torch.float8_e4m3fn), requires_grad=False)  # (out, in)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # (M, in)
        x_scale = (x2.abs().max().float() / E4M3_MAX).clamp_min(1e-12)
        xq = (x2.float() / x_scale).to(torch.float8_e4m3fn)
        bias = None if self.bias is None else self.bias.to(self.out_dtype)
        y = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.w_scale, bias=bias,
                             out_dtype=self.out_dtype)
        return y.reshape(*shape[:-1], y.shape[-1])


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _to_float8_compute(model: nn.Module, cfg: FP8Config) -> dict:
    swapped = {}
    for name, m in _targets(model, cfg.skip, nn.Linear):
        if type(m) is not nn.Linear or m.in_features % 16 or m.out_features % 16:
            continue  # float8 matmuls need both sides in multiples of 16
        _swap(model, name, Float8Linear(m))
        swapped[name] = m.to("cpu")
    return {"mode": "compute", "modules": swapped, "device": next(model.parameters()).device}


def apply_fp8(model: nn.Module, config: FP8Config) -> None:
    """Switch FP8 on for `model`; `remove_fp8` restores it exactly."""
    if config.mode not in FP8_MODES:
        raise UsageError(f"fp8 must be one of {', '.join(FP8_MODES)}, got {config.mode!r}")
    if config.mode == "off":
        return
    if model in _SAVED:
        raise UsageError("fp8: already on for this model; switch it off first")
    param = next(model.parameters())
    if config.mode == "compute":
        reason = compute_capable(param.device)
        if reason:
            raise UsageError(f"fp8 compute: {reason}")
        _SAVED[model] = _to_float8_compute(model, config)
        return
    dtype = param.dtype
    saved = {}
    for name, m in _targets(model, config.skip, CASTABLE):
        saved[name] = {k: p.detach().to("cpu", copy=True) for k, p in m.named_parameters(recurse=False)}
        add_hook(m, _StoreInFloat8(torch.float8_e4m3fn, dtype, non_blocking=False), HOOK)
    _SAVED[model] = {"mode": "weights", "modules": saved, "dtype": dtype}


def remove_fp8(model: nn.Module) -> None:
    saved = _SAVED.pop(model, None)
    if saved is None:
        return
    if saved["mode"] == "compute":
        for name, linear in saved["modules"].items():
            _swap(model, name, linear.to(saved["device"]))
        return
    for name, params in saved["modules"].items():
        m = model.get_submodule(name)
        remove_hook(m, HOOK)
        for k, value in params.items():
            p = getattr(m, k)
            p.data = value.to(p.device)


def fp8_mode(model: nn.Module) -> str:
    saved = _SAVED.get(model)
    return saved["mode"] if saved else "off"
