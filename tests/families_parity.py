"""Shared by the family tests: run the lab's sampler and the diffusers pipeline on the same model,
seed, steps and guidance, and return both final latents (in the lab's z space) and both images."""

from __future__ import annotations

import numpy as np
import torch

from engine.parity import lab_latent

PROMPT = "a red cube on a blue table"


def lab_run(family, *, steps: int, guidance: float, seed: int, size: int = 64, prompt: str = PROMPT):
    """The lab's final latent z (before decoding), its image (H, W, 3) uint8 and the measurement."""
    return lab_latent(family, prompt, steps=steps, guidance=guidance, seed=seed, height=size, width=size)


def pipeline_run(pipe, *, steps: int, seed: int, size: int = 64, prompt: str = PROMPT, to_lab=lambda z: z, **kw):
    """The pipeline's final latent (mapped into the lab's z space by `to_lab`) and its image, with
    the seed given as diffusers users give it: a CPU generator."""
    pipe.set_progress_bar_config(disable=True)
    seen = {}

    def grab(p, i, t, tensors):
        seen["z"] = tensors["latents"].detach().clone()
        return tensors
    out = pipe(prompt=prompt, num_inference_steps=steps, height=size, width=size, output_type="np",
               generator=torch.Generator().manual_seed(seed), callback_on_step_end=grab, **kw).images
    image = (np.asarray(out[0]) * 255).round().astype(np.uint8)
    return to_lab(seen["z"]), image


def assert_same(lab, ref, *, atol: float = 1e-4):
    """Latents equal within `atol` (relative to their scale) and images within one grey level."""
    (z_lab, img_lab), (z_ref, img_ref) = lab, ref
    assert z_lab.shape == z_ref.shape
    scale = z_ref.abs().max().item()
    err = (z_lab.float() - z_ref.float()).abs().max().item()
    assert err <= atol * max(scale, 1.0), f"latents differ by {err:.2e} (scale {scale:.2f})"
    assert img_lab.shape == img_ref.shape
    diff = np.abs(img_lab.astype(int) - img_ref.astype(int))
    assert diff.max() <= 1, f"images differ by up to {diff.max()} grey levels"
    assert img_lab.std() > 5  # a real image, not a constant one that would match anything
