"""Does the lab reproduce diffusers on this model? (`python -m engine parity`)

Runs the lab's sampler and the model's own diffusers pipeline, with the scheduler equivalent to the
lab's grid, on the same prompt, seed (a CPU generator, as diffusers users pass it), steps, guidance
and size, and reports how far apart the final latents and the images are.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import UsageError
from .families.pipeline import PipelineFamily
from .measure import Measurement
from .sampling import sample


def lab_latent(family, prompt: str, *, steps: int, guidance: float, seed: int, height: int,
               width: int) -> tuple[torch.Tensor, np.ndarray, Measurement]:
    """The lab's final z (before decoding), its image (H, W, 3) uint8, and the measurement."""
    z, m = sample(family, [prompt], steps=steps, guidance=guidance, seeds=[seed], height=height, width=width,
                  output_type="latent")
    return z, family.decode(z)[0].numpy(), m


def pipeline_latent(family: PipelineFamily, prompt: str, *, steps: int, guidance: float, seed: int,
                    height: int, width: int) -> tuple[torch.Tensor, np.ndarray]:
    """The diffusers pipeline's final latent (as the lab's z) and image."""
    kwargs = family.pipeline_kwargs(guidance)
    pipe = family.pipeline(scheduler=family.equivalent_scheduler())
    pipe.set_progress_bar_config(disable=True)
    seen = {}

    def grab(p, i, t, tensors):
        seen["z"] = tensors["latents"].detach().clone()
        return tensors
    with torch.no_grad():
        out = pipe(prompt=prompt, num_inference_steps=steps, height=height, width=width, output_type="np",
                   generator=torch.Generator().manual_seed(seed), callback_on_step_end=grab, **kwargs).images
    image = (np.asarray(out[0]) * 255).round().astype(np.uint8)
    return family.from_pipeline_latents(seen["z"], height, width), image


def compare(family, prompt: str, *, steps: int, guidance: float, seed: int, height: int, width: int) -> dict:
    """Distances between the lab's and the pipeline's result for one generation."""
    if not isinstance(family, PipelineFamily):
        raise UsageError(f"parity: the {family.name} family is not a diffusers pipeline; pass a diffusers model")
    family.check_size(height, width)
    run = dict(steps=steps, guidance=guidance, seed=seed, height=height, width=width)
    z_lab, img_lab, _ = lab_latent(family, prompt, **run)
    z_ref, img_ref = pipeline_latent(family, prompt, **run)
    dz = (z_lab.float() - z_ref.float()).abs()
    di = np.abs(img_lab.astype(int) - img_ref.astype(int))
    return {"family": family.name, "scheduler": type(family.equivalent_scheduler()).__name__,
            "steps": steps, "guidance": guidance, "seed": seed, "height": height, "width": width,
            "max_latent_diff": float(dz.max()), "latent_scale": float(z_ref.float().abs().max()),
            "max_image_diff": int(di.max()), "mean_image_diff": round(float(di.mean()), 5)}
