"""Students leave the lab (`python -m engine export`): a model as a plain diffusers pipeline
directory, or a LoRA student as an adapter in diffusers' own LoRA format, each with a model card.

- `diffusers`: what `DiffusionPipeline.from_pretrained(DIR)` loads and samples to the lab's image at
  the same seed, with the scheduler whose steps are the lab's sampler. A guidance student of a UNet
  reads the scale as the stock pipelines feed it (families/guidance.py); the embedded family, which
  has no stock pipeline, gets its own (shapes_pipeline.py, loaded with `trust_remote_code=True`).
- `lora`: the adapter of a LoRA student, written by the pipeline's own `save_lora_weights` (keys
  under the `unet.` / `transformer.` prefix), so `pipe.load_lora_weights(DIR)` on the base injects
  every layer; modules trained fully beside it (a guidance input) go to their own file, with the
  config change that makes room for them.

A directory is written next to DIR and renamed into place when whole: a failed export leaves nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError

FORMATS = ("diffusers", "lora")


def check_out(out: Path) -> None:
    """Refuse an output directory that is taken or cannot be written, before anything loads."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out: {str(out)!r} exists and is not an empty folder; name a new directory")
    if not out.parent.is_dir():
        raise UsageError(f"--out: the folder {str(out.parent)!r} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"--out: the folder {str(out.parent)!r} cannot be written")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt
