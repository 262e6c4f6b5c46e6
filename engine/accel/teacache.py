"""TeaCache (Liu et al. 2024, "Timestep Embedding Tells: It's Time to Cache for Video Diffusion
Model", Alg. 1) for any denoiser, UNets included.

For every row of the batch (one image under one guidance branch) and every step k:
    d_k  = |m_k - m_{k-1}|_1 / |m_{k-1}|_1     relative L1 change of the timestep-modulated input m
    acc += max(poly(d_k), 0)                     rescaled by the calibrated polynomial (calibrate.py)
    acc <  threshold  -> reuse the row's cached output;   otherwise compute it and set acc = 0.
The first steps (`retention`, as MagCache and TeaCache's "ret_steps" variants do) and the last
step are always computed; the state is reset at the start of every
sampling call, so nothing leaks between images, and it is kept per row, so nothing leaks between
the unconditional and conditional branches of a batched CFG forward.

The modulated input is read by a hook on a probe submodule that the forward reaches early: for
diffusers UNets the input of the first ResNet's second norm (the features after the timestep
embedding is added), for FLUX/SD3-style transformers the output of the first block's adaptive
norm (TeaCache's own choice). The forward stops there when some rows may skip; only the rows that
must compute run the full network.

What is reused is the denoiser's output for the row (velocity, eps or v). Along a sampling
trajectory that output changes slowly (for rectified flow it is constant on a straight path), and
the family's x0 conversion still uses the current z_t and t — the denoiser-level counterpart of
TeaCache reusing the residual of its transformer blocks.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
from diffusers.hooks import ModelHook

from ..errors import UsageError
from ..trajectory import current
from .hooks import add_hook, flatten, has_hook, remove_hook, take_rows

HOOK = "lab_teacache"

def _flux2_modulated(block, args, kwargs) -> torch.Tensor:
    """FLUX.2 modulates inside its blocks: (1 + scale) * norm1(h) + shift of the first block."""
    from diffusers.models.transformers.transformer_flux2 import Flux2Modulation

    h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    mod = kwargs["temb_mod_img"] if "temb_mod_img" in kwargs else args[2]
    (shift, scale, _), _ = Flux2Modulation.split(mod, 2)
    return (1 + scale) * block.norm1(h) + shift


# Where each model class exposes its timestep-modulated input: "module.path:input|output", or a
# module path and a function of that module's (args, kwargs) that computes it.
PROBES = {
    "UNet2DConditionModel": "down_blocks.0.resnets.0.norm2:input",
    "UNet2DModel": "down_blocks.0.resnets.0.norm2:input",
    "FluxTransformer2DModel": "transformer_blocks.0.norm1:output",
    "SD3Transformer2DModel": "transformer_blocks.0.norm1:output",
    "Flux2Transformer2DModel": ("transformer_blocks.0", _flux2_modulated),
}


@dataclass
class TeaCacheConfig:
    threshold: float = 0.1  # skip while the accumulated rescaled change stays below this
    coefficients: tuple[float, ...] | None = None  # rescaling polynomial, highest power first; None: identity
    probe: str | None = None  # "module.path:input|output" holding the modulated input; None: by model class
    max_skips: int = 0  # most consecutive skips per row (0: no limit)
    retention: float = 0.2  # fraction of the first steps always computed: the composition is set there


class _Stop(Exception):
    """Raised at the probe to end a forward whose rows may reuse their cached output."""


def probe_of(model: torch.nn.Module, config: TeaCacheConfig) -> tuple[torch.nn.Module, object]:
    """The probed submodule and how to read it: "input", "output" or a function (module, args, kwargs)."""
    spec = config.probe or PROBES.get(type(model).__name__)
    if spec is None:
        raise UsageError(f"cache teacache: no probe known for {type(model).__name__}; "
                         f"known: {', '.join(PROBES)} (or set TeaCacheConfig.probe)")
    path, where = spec if isinstance(spec, tuple) else spec.partition(":")[::2]
    try:
        module = model.get_submodule(path)
    except AttributeError:
        raise UsageError(f"cache teacache: {type(model).__name__} has no submodule {path!r} to probe") from None
    if where not in ("input", "output") and not callable(where):
        raise UsageError(f"cache teacache: probe must end in ':input' or ':output', got {spec!r}")
    return module, where


def _rel_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row: |a - b|_1 / |b|_1."""
    dims = tuple(range(1, a.dim()))
    return ((a - b).abs().mean(dims) / b.abs().mean(dims).clamp_min(1e-12)).float()


class TeaCacheHook(ModelHook):
    _is_stateful = True

    def __init__(self, config: TeaCacheConfig, probe: torch.nn.Module, where: str):
        super().__init__()
        self.config = config
        self.probe, self.where = probe, where
        self.owner = threading.get_ident()  # the thread that switched it on; other threads run uncached
        self.record: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # calibration: (d, output change)
        self._handle = None
        self.reset_state(None)

    # -- hook life ------------------------------------------------------------------------------
    def initialize_hook(self, module):
        if callable(self.where):
            read = self.where
            self._handle = self.probe.register_forward_pre_hook(
                lambda m, args, kwargs: self._at_probe(read(m, args, kwargs)) if self._armed else None,
                with_kwargs=True)
        elif self.where == "input":
            self._handle = self.probe.register_forward_pre_hook(lambda m, args: self._at_probe(args[0]))
        else:
            self._handle = self.probe.register_forward_hook(
                lambda m, args, out: self._at_probe(out[0] if isinstance(out, tuple) else out))
        return module

    def deinitalize_hook(self, module):
        self._handle.remove()
        return module

    def reset_state(self, module):
        self._trajectory = None  # the sampling call the state belongs to
        self._prev = None  # (N, ...) modulated input of the previous step
        self._acc = None  # (N,) accumulated rescaled change since the last computed pass
        self._run = None  # (N,) consecutive skips
        self._cache = None  # list of (N, ...) output tensors of each row's last computed pass
        self._armed = False
        self._mask = None  # (N,) rows computed in this call
        self._rebuild = None  # turns a list of output tensors back into the model's output type
        self._pending_d = None
        return module

    # -- the decision ---------------------------------------------------------------------------
    def _rescale(self, d: torch.Tensor) -> torch.Tensor:
        if self.config.coefficients is None:
            return d
        y = torch.zeros_like(d)
        for c in self.config.coefficients:  # Horner
            y = y * d + c
        return y.clamp_min(0)  # a change cannot undo an earlier one

    def _at_probe(self, m: torch.Tensor):
        if not self._armed:
            return None
        self._armed = False
        m = m.detach()
        n = m.shape[0]
        traj = current()
        compute = torch.ones(n, dtype=torch.bool)
        if self._prev is not None and self._prev.shape == m.shape and self._cache is not None:
            d = _rel_l1(m, self._prev).cpu()
            self._acc += self._rescale(d)
            compute = self._acc >= self.config.threshold
            if self.config.max_skips:
                compute |= self._run >= self.config.max_skips
            if traj.last or traj.step < math.ceil(self.config.retention * traj.steps):
                compute[:] = True
            if self.record is not None:
                self._pending_d = d
        else:
            self._acc = torch.zeros(n)
            self._run = torch.zeros(n, dtype=torch.long)
        self._prev = m
        self._acc[compute] = 0.0
        self._run[compute] = 0
        self._run[~compute] += 1
        self._mask = compute
        if not compute.all():
            raise _Stop
        return None

    # -- the forward ----------------------------------------------------------------------------
    def new_forward(self, module, *args, **kwargs):
        traj = current()
        if traj is None or threading.get_ident() != self.owner:  # not our sampling: a plain forward
            return self.fn_ref.original_forward(*args, **kwargs)
        if traj is not self._trajectory:  # a new sampling call: nothing carries over
            self.reset_state(module)
            self._trajectory = traj
        self._pending_d = None
        self._armed = True
        try:
            out = self.fn_ref.original_forward(*args, **kwargs)
        except _Stop:
            out = None
        finally:
            self._armed = False
        mask = self._mask
        if out is not None:
            tensors, self._rebuild = flatten(out)
            self._remember(tensors, mask)
            return out
        n = mask.shape[0]
        rows = mask.nonzero().squeeze(1)
        tensors = [t.clone() for t in self._cache]
        if len(rows):
            sub, _ = flatten(self.fn_ref.original_forward(*take_rows(args, rows, n), **take_rows(kwargs, rows, n)))
            for full, part in zip(tensors, sub):
                full[rows.to(full.device)] = part
            self._remember(tensors, mask)
        traj.skipped_rows += int(n - len(rows))
        return self._rebuild(tensors)

    def _remember(self, tensors: list[torch.Tensor], mask: torch.Tensor) -> None:
        tensors = [t.detach() for t in tensors]
        if self.record is not None and self._pending_d is not None:
            self.record.append((self._pending_d, _rel_l1(tensors[0], self._cache[0]).cpu()))
        self._cache = tensors if mask.all() else [t.clone() for t in tensors]


def apply_teacache(model: torch.nn.Module, config: TeaCacheConfig) -> TeaCacheHook:
    """Switch TeaCache on for `model` (a family's denoiser); `remove_teacache` switches it off."""
    if not config.threshold >= 0:
        raise UsageError(f"cache teacache: threshold must be a number >= 0, got {config.threshold}")
    if has_hook(model, HOOK):
        raise UsageError("cache teacache: already on for this model; switch it off first")
    probe, where = probe_of(model, config)
    hook = TeaCacheHook(config, probe, where)
    add_hook(model, hook, HOOK)
    return hook


def remove_teacache(model: torch.nn.Module) -> None:
    remove_hook(model, HOOK)
