"""diffusers' own cache hooks (FirstBlockCache, MagCache, TaylorSeer) on the model classes that
support them, driven the way they expect.

diffusers keeps one cache state per `cache_context(name)` and assumes the pipeline calls the model
once per guidance branch inside its context. The lab's sampler batches both CFG branches into one
forward, so a root hook splits that batch along the branches the sampler declared
(engine/trajectory.py) and runs each part in its own context; the state is reset at the start of
every sampling call, so nothing carries from one image batch to the next.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, MagCacheConfig, ModelHook, TaylorSeerCacheConfig
from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.models.cache_utils import CacheMixin

from ..errors import UsageError
from ..trajectory import current
from .hooks import add_hook, flatten, has_hook, remove_hook, take_rows, tidy
from .options import DIFFUSERS_METHODS

HOOK = "lab_branch_contexts"
DEFAULTS = {"fbcache": 0.05, "magcache": 0.06, "taylorseer": 4}  # diffusers' suggested knobs


@dataclass
class DiffusersCacheConfig:
    method: str = "fbcache"  # fbcache | magcache | taylorseer
    threshold: float | None = None  # fbcache, magcache: skip threshold; taylorseer: steps between full passes
    steps: int = 50  # sampling steps (MagCache spreads its ratios over them)
    mag_ratios: tuple[float, ...] | None = None  # MagCache's calibrated per-step magnitude ratios
    calibrate: bool = False  # MagCache: measure the ratios (skips nothing) instead of using them


def unsupported(model: torch.nn.Module, method: str) -> str | None:
    """Why `method` cannot run on `model`, or None when it can."""
    name = type(model).__name__
    if method not in DIFFUSERS_METHODS:
        return f"{method!r} is not one of diffusers' caches ({', '.join(DIFFUSERS_METHODS)})"
    if not isinstance(model, CacheMixin):
        return f"diffusers' {method} runs on its transformer classes, not on {name}; use teacache"
    blocks = [b for n, c in model.named_children() if n in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
              and isinstance(c, torch.nn.ModuleList) for b in c]
    if len(blocks) < 2:
        return f"{name} has fewer than two transformer blocks to cache"
    if method in ("fbcache", "magcache"):
        try:
            shapes = {TransformerBlockRegistry.get(type(b)).return_encoder_hidden_states_index for b in blocks}
        except ValueError:
            return f"diffusers' {method} does not know the blocks of {name}; use teacache"
        if len(shapes) > 1:  # its head and tail hooks assume every block returns the same structure
            return f"diffusers' {method} cannot span {name}'s mix of double- and single-stream blocks; use teacache"
    return None


def _diffusers_config(config: DiffusersCacheConfig):
    knob = DEFAULTS[config.method] if config.threshold is None else config.threshold
    if config.method == "fbcache":
        return FirstBlockCacheConfig(threshold=float(knob))
    if config.method == "magcache":
        if config.calibrate:
            return MagCacheConfig(threshold=float(knob), num_inference_steps=config.steps, calibrate=True)
        if config.mag_ratios is None:
            raise UsageError("cache magcache: needs the model's calibrated magnitude ratios "
                             "(python -m engine calibrate --method magcache)")
        return MagCacheConfig(threshold=float(knob), num_inference_steps=config.steps,
                              mag_ratios=torch.tensor(config.mag_ratios))
    if int(knob) != knob or knob < 1:
        raise UsageError(f"cache taylorseer: the number after ':' is the steps between full passes, "
                         f"an integer >= 1, got {knob:g}")
    return TaylorSeerCacheConfig(cache_interval=int(knob), disable_cache_before_step=2,
                                 disable_cache_after_step=config.steps - 1, taylor_factors_dtype=torch.float32)


def _state_managers(model: torch.nn.Module):
    registry = HookRegistry.check_if_exists_or_initialize(model)
    for child in registry._get_child_registries():
        for hook in child.hooks.values():
            sm = getattr(hook, "state_manager", None)
            if sm is not None and hook._is_stateful:
                yield hook, sm


def _was_skipped(model: torch.nn.Module, method: str) -> bool:
    """Whether the call just made (inside its context) reused the cache instead of the full model."""
    for _, sm in _state_managers(model):
        state = sm.get_state()
        if method in ("fbcache", "magcache"):
            return not state.should_compute
        if not state.is_inactive:  # taylorseer: predicted when this step did not refresh the factors
            return state.last_update_step != state.current_step
    return False


class BranchContexts(ModelHook):
    """Runs each CFG branch of a batched forward in its own `cache_context`, resetting per call."""

    def __init__(self, method: str, owner: int):
        super().__init__()
        self.method = method
        self.owner = owner  # the thread that switched the cache on; other threads run uncached
        self._trajectory = None

    def new_forward(self, module, *args, **kwargs):
        traj = current()
        if traj is None or threading.get_ident() != self.owner:
            return self.fn_ref.original_forward(*args, **kwargs)
        if traj is not self._trajectory:
            HookRegistry.check_if_exists_or_initialize(module).reset_stateful_hooks(recurse=True)
            self._trajectory = traj
        names = traj.branches
        n = traj.images * len(names)
        outs, rebuild = [], None
        for i, name in enumerate(names):
            rows = torch.arange(i * traj.images, (i + 1) * traj.images)
            part_args = take_rows(args, rows, n) if len(names) > 1 else args
            part_kwargs = take_rows(kwargs, rows, n) if len(names) > 1 else kwargs
            with module.cache_context(name, step_index=traj.step, num_inference_steps=traj.steps):
                out = self.fn_ref.original_forward(*part_args, **part_kwargs)
                if _was_skipped(module, self.method):
                    traj.skipped_rows += traj.images
            tensors, rebuild = flatten(out)
            outs.append(tensors)
        if len(outs) == 1:
            return rebuild(outs[0])
        return rebuild([torch.cat(parts) for parts in zip(*outs)])


def apply_diffusers_cache(model: torch.nn.Module, config: DiffusersCacheConfig) -> None:
    """Switch one of diffusers' caches on for `model`; `remove_diffusers_cache` switches it off."""
    reason = unsupported(model, config.method)
    if reason:
        raise UsageError(f"cache {config.method}: {reason}")
    if has_hook(model, HOOK) or model.is_cache_enabled:
        raise UsageError(f"cache {config.method}: a cache is already on for this model; switch it off first")
    model.enable_cache(_diffusers_config(config))
    add_hook(model, BranchContexts(config.method, threading.get_ident()), HOOK)


def remove_diffusers_cache(model: torch.nn.Module) -> None:
    remove_hook(model, HOOK)
    if model.is_cache_enabled:
        model.disable_cache()
    tidy(model)
