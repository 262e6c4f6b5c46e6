"""Which family a diffusers directory holds, and where a hub id's files are on this machine.

A diffusers directory has a model_index.json naming its pipeline class and components; the family
is read from the class, or else from the denoiser's class. A hub id ("owner/name") is looked up in
the local Hugging Face cache only: the lab never downloads weights, and says how to provide them.
"""

from __future__ import annotations

import importlib
import json
import re
from contextlib import contextmanager
from pathlib import Path

from ..errors import UsageError

# family -> (module, adapter class); imported on first use (the diffusers pipelines are heavy)
ADAPTERS = {"sd": ("sd", "SDFamily"), "sdxl": ("sd", "SDXLFamily"), "flux": ("flux", "FluxFamily"),
            "flux2": ("flux2", "Flux2Family"), "sd3": ("sd3", "SD3Family")}
PIPELINES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl", "FluxPipeline": "flux",
             "Flux2KleinPipeline": "flux2", "StableDiffusion3Pipeline": "sd3"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@contextmanager
def quiet():
    """Silence diffusers' and transformers' progress bars and warnings (on import and while loading),
    so a command prints its result, or its one-line error, and nothing else."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    before = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(before[0])
        tlog.set_verbosity(before[1])
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()


def adapter(family: str):
    module, cls = ADAPTERS[family]
    with quiet():
        return getattr(importlib.import_module(f"engine.families.{module}"), cls)


def loader(family: str):
    """The load(path, device, dtype) function of a family (importing its module when called)."""
    def load(path, **kw):
        cls = adapter(family)
        with quiet():
            return cls.load(path, **kw)
    return load


LOADERS = {family: loader(family) for family in ADAPTERS}


def _component_class(index: dict, name: str) -> str | None:
    entry = index.get(name)
    return entry[1] if isinstance(entry, list) and len(entry) == 2 else None


def family_of_pipeline(path: Path) -> str:
    """The family of a diffusers directory, from model_index.json."""
    index_file = path / "model_index.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"--model: {index_file} is not a readable model index ({e})") from None
    cls = index.get("_class_name") if isinstance(index, dict) else None
    if cls in PIPELINES:
        return PIPELINES[cls]
    unet, transformer = _component_class(index, "unet"), _component_class(index, "transformer")
    if unet == "UNet2DConditionModel":
        return "sdxl" if _component_class(index, "text_encoder_2") else "sd"
    by_transformer = {"FluxTransformer2DModel": "flux", "Flux2Transformer2DModel": "flux2",
                      "SD3Transformer2DModel": "sd3"}
    if transformer in by_transformer and not (transformer == "Flux2Transformer2DModel"
                                              and _component_class(index, "text_encoder") != "Qwen3ForCausalLM"):
        return by_transformer[transformer]
    raise UsageError(f"--model: {path} holds a {cls or 'unknown'} pipeline, which the lab does not support; "
                     f"supported: {', '.join(PIPELINES)}")


def looks_like_hub_id(model: str) -> bool:
    return bool(HUB_ID.match(model))


def hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a hub model in the Hugging Face cache (never the network)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise UsageError(
            f"--model: {repo_id!r} is neither a model here nor in the Hugging Face cache ({constants.HF_HUB_CACHE}); "
            f"the lab does not download weights: run `hf download {repo_id}` where there is network (and copy "
            f"that cache here, or set HF_HOME to it), or pass a local diffusers directory") from None
