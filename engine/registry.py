"""Model names -> model directories -> loaded family adapters.

`--model` (and every model picker) takes `embedded` (the shipped teacher), a registered model's
name (a student of a distillation job), a path to a model directory (the lab's, with lab.json, or
any diffusers directory with model_index.json of a supported pipeline), or a hub id already in the
Hugging Face cache.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import torch

from .errors import UsageError
from .families import catalog
from .families.adapter import base_path
from .families.base import Family
from .families.embedded import EmbeddedFamily
from .paths import ASSETS, EMBEDDED_TEACHER
from .store import Store

# The shipped models: the embedded teacher and the students of the full recipe (made by
# `python -m engine distill ...` and copied into assets/), present when their files are.
SHIPPED = {"embedded": EMBEDDED_TEACHER, "embedded-guidance": ASSETS / "embedded-guidance",
           "embedded-4step": ASSETS / "embedded-4step", "embedded-1step": ASSETS / "embedded-1step"}
BUILTIN = {name: path for name, path in SHIPPED.items() if (path / "lab.json").exists()}
LOADERS = {"embedded": EmbeddedFamily.load, **catalog.LOADERS}


def _shipped_row(name: str) -> dict | None:
    """A shipped student's registry row, read from its lab.json (the teacher, a root, has none)."""
    if name not in BUILTIN or name == "embedded":
        return None
    meta = json.loads((BUILTIN[name] / "lab.json").read_text())
    return {"name": name, "path": str(BUILTIN[name]), "family": meta["family"], "parent": meta.get("parent"),
            "recipe": meta.get("recipe"), "round": meta.get("round"), "created": None}


def model_row(store: Store | None, name: str) -> dict | None:
    """A model's row: registered in this data directory, or a shipped student (None: neither)."""
    row = store.model(name) if store is not None else None
    return row or _shipped_row(name)


def models(store: Store | None) -> list[dict]:
    """The rows of every student a lineage can pass through: the shipped ones, then the registered
    ones, oldest first (a registered row under a shipped name replaces it)."""
    registered = store.models() if store is not None else []
    taken = {r["name"] for r in registered}
    shipped = [r for r in map(_shipped_row, BUILTIN) if r is not None and r["name"] not in taken]
    return shipped + registered


def lineage(store: Store | None, name: str) -> list[str]:
    """The model and its ancestors, root (the first teacher) first. A root that is not a registered
    model (the built-in `embedded`, a model directory) is named by its first student's parent."""
    chain, row = [name], model_row(store, name)
    while row is not None and row.get("parent") and row["parent"] not in chain:
        chain.append(row["parent"])
        row = model_row(store, row["parent"])
    return chain[::-1]


def lab_json(path: Path) -> dict:
    """A model directory's lab.json ({} for a plain diffusers directory)."""
    file = path / "lab.json"
    return json.loads(file.read_text()) if file.exists() else {}


def safetensors_header(path: Path) -> dict:
    """The tensors a .safetensors file holds, name -> {dtype, shape, data_offsets}, from its header."""
    with path.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    header.pop("__metadata__", None)
    return header


def inventory(store: Store | None) -> list[dict]:
    """Every model a picker offers, with where it lives: family, path, lineage (root first), size on
    disk, and for a LoRA adapter student the base it needs."""
    out = []
    for name in names(store):
        path = resolve(name, store)
        row = model_row(store, name) or {}
        meta = lab_json(path)
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        entry = {"name": name, "family": row.get("family") or meta.get("family"), "path": str(path),
                 "lineage": lineage(store, name), "kind": meta.get("kind") or ("teacher" if not row else None),
                 "bytes": sum(p.stat().st_size for p in files), "created": row.get("created")}
        if "base" in meta:
            entry["base"] = str(base_path(path, meta))
        out.append(entry)
    return out


def names(store: Store | None = None) -> list[str]:
    """Every model a picker offers: the built-in ones, then the registered ones."""
    registered = [r["name"] for r in store.models()] if store else []
    return list(BUILTIN) + [n for n in registered if n not in BUILTIN]


def resolve(model: str, store: Store | None = None, field: str = "--model") -> Path:
    """The directory of a model name or path; a UsageError naming `field` where there is none."""
    if not model or not model.strip():
        raise UsageError(f"{field} must be 'embedded', a registered model name or a model directory, got ''")
    if model in BUILTIN:
        return BUILTIN[model]
    row = store.model(model) if store else None
    if row:
        return Path(row["path"])
    path = Path(model).expanduser()
    if not path.exists() and catalog.looks_like_hub_id(model):
        return catalog.hub_snapshot(model)
    if not path.exists():
        known = ", ".join(names(store))
        raise UsageError(f"{field}: no model named or found at {model!r}; use one of: {known}, or a model directory")
    return path


def register(store: Store, name: str, model: str, *, replace: bool = False) -> dict:
    """Name a model directory or cached hub id so every picker (CLI, app, distillation) offers it.
    Nothing is copied or loaded: the family is read from the directory's files. A name already
    registered is refused unless `replace`."""
    if not name or not name.strip() or "/" in name or name != name.strip() or name in BUILTIN:
        raise UsageError(f"--name must be a non-empty name without '/' or surrounding spaces, and not "
                         f"{', '.join(BUILTIN)}; got {name!r}")
    taken = store.model(name)
    if taken is not None and not replace:
        raise UsageError(f"--name {name!r} is registered already (at {taken['path']}); choose another "
                         f"name, or --replace it")
    path = resolve(model, store).resolve()
    return store.register_model(name, path, family_of(path))


def family_of(path: Path) -> str:
    meta = path / "lab.json"
    if path.is_dir() and not meta.exists() and (path / "model_index.json").exists():
        return catalog.family_of_pipeline(path)
    if not path.is_dir() or not meta.exists():
        raise UsageError(f"--model: {path} is not a model directory (it has no lab.json or model_index.json)")
    try:
        family = json.loads(meta.read_text())["family"]
    except (ValueError, KeyError) as e:
        raise UsageError(f"--model: {meta} is not a valid model description ({e})") from None
    if family not in LOADERS:
        raise UsageError(f"--model: family {family!r} in {meta} is not supported; supported: {', '.join(LOADERS)}")
    return family


def _safetensors_problem(path: Path) -> str | None:
    """What is wrong with a .safetensors file's framing (None: as long as its header says), read
    from its header alone."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 + n:
                return f"is truncated ({size} bytes, its header alone says {8 + n})"
            header = json.loads(f.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        return "is not a safetensors file (its header cannot be read)"
    if size < 8 + n + end:
        return f"is truncated ({size} of {8 + n + end} bytes)"
    return None


def check_complete(path: Path, field: str = "--model") -> str:
    """The family of a model directory, once it is known to be whole: refuse, in one line naming
    the part, one with a part missing (a component model_index.json lists without its folder) or a
    weights file cut short; from the files' headers, without loading anything."""
    family = family_of(path)
    index = path / "model_index.json"
    if index.exists():
        try:
            parts = json.loads(index.read_text())
        except ValueError as e:
            raise UsageError(f"{field}: {index} is not valid JSON ({e})") from None
        for name, spec in parts.items():
            if not name.startswith("_") and isinstance(spec, list) and spec and spec[0] is not None \
                    and not (path / name).is_dir():
                raise UsageError(f"{field}: {path} has no {name}/ folder, which model_index.json lists "
                                 f"({spec[-1]}); copy the whole pipeline")
    for weights in sorted(path.rglob("*.safetensors")):
        problem = _safetensors_problem(weights)
        if problem:
            raise UsageError(f"{field}: {weights.relative_to(path)} in {path} {problem}; copy it again")
    return family


def takes_guidance(path: Path) -> bool:
    """Whether the model at `path` takes the guidance scale as an input (one pass under guidance),
    read from its files without loading it."""
    m = lab_json(path)
    if m.get("guidance_input") or m.get("guidance_range"):
        return True
    for config in (path / "unet" / "config.json", path / "transformer" / "config.json"):
        if config.exists():
            c = json.loads(config.read_text())
            return bool(c.get("time_cond_proj_dim") or c.get("guidance_embeds"))
    return False


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if re.fullmatch(r"cpu:\d+", device or ""):  # accelerate names each of several CPU processes' devices so
        return torch.device("cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device or ""):
        raise UsageError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
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
    family = check_complete(Path(path))
    try:
        loaded = LOADERS[family](Path(path), device=torch.device(device), dtype=DTYPES[dtype])
    except UsageError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError, ImportError) as e:
        raise UsageError(f"--model: could not load {path}: {str(e).splitlines()[0]}") from None
    loaded.sampler = lab_json(Path(path)).get("sampler", "ddim")  # consistency and DMD students: "consistency"
    return loaded


def load(model: str, *, store: Store | None = None, device: str = "auto", dtype: str = "auto") -> Family:
    """The loaded family for a model name or path (cached: loading twice returns the same object)."""
    path = resolve(model, store)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    dt_name = next(k for k, v in DTYPES.items() if v == dt)
    return _load(str(path.resolve()), str(dev), dt_name)
