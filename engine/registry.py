"""Model names -> model directories -> loaded family adapters.

`--model` (and every model picker) takes `embedded` (the shipped teacher), a registered model's
name (a student of a distillation job), or a path to a model directory.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from .errors import UsageError
from .families.base import Family
from .families.embedded import EmbeddedFamily
from .paths import EMBEDDED_TEACHER
from .store import Store

BUILTIN = {"embedded": EMBEDDED_TEACHER}
LOADERS = {"embedded": EmbeddedFamily.load}


def names(store: Store | None = None) -> list[str]:
    """Every model a picker offers: the built-in ones, then the registered ones."""
    registered = [r["name"] for r in store.models()] if store else []
    return list(BUILTIN) + [n for n in registered if n not in BUILTIN]


def resolve(model: str, store: Store | None = None) -> Path:
    if not model or not model.strip():
        raise UsageError("--model must be 'embedded', a registered model name or a model directory, got ''")
    if model in BUILTIN:
        return BUILTIN[model]
    row = store.model(model) if store else None
    if row:
        return Path(row["path"])
    path = Path(model).expanduser()
    if not path.exists():
        known = ", ".join(names(store))
        raise UsageError(f"--model: no model named or found at {model!r}; use one of: {known}, or a model directory")
    return path


def family_of(path: Path) -> str:
    meta = path / "lab.json"
    if not path.is_dir() or not meta.exists():
        raise UsageError(f"--model: {path} is not a model directory (it has no lab.json)")
    try:
        family = json.loads(meta.read_text())["family"]
    except (ValueError, KeyError) as e:
        raise UsageError(f"--model: {meta} is not a valid model description ({e})") from None
    if family not in LOADERS:
        raise UsageError(f"--model: family {family!r} in {meta} is not supported; supported: {', '.join(LOADERS)}")
    return family


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine; use cpu or auto")
    return torch.device(device)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of auto, {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


@lru_cache(maxsize=4)
def _load(path: str, device: str, dtype: str) -> Family:
    family = family_of(Path(path))
    try:
        return LOADERS[family](Path(path), device=torch.device(device), dtype=DTYPES[dtype])
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UsageError(f"--model: could not load {path}: {str(e).splitlines()[0]}") from None


def load(model: str, *, store: Store | None = None, device: str = "auto", dtype: str = "auto") -> Family:
    """The loaded family for a model name or path (cached: loading twice returns the same object)."""
    path = resolve(model, store)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    dt_name = next(k for k, v in DTYPES.items() if v == dt)
    return _load(str(path.resolve()), str(dev), dt_name)
