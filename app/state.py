"""What every tab shares: the store and model loading, on the device the app was started with."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from engine import registry
from engine.families.base import Family
from engine.store import Store

DISPLAY_SIDE = 384  # small images are shown at least this big, upscaled without blur


@dataclass
class Lab:
    store: Store
    device: str = "auto"

    def model_names(self) -> list[str]:
        return registry.names(self.store)

    def load(self, name: str) -> Family:
        return registry.load(name, store=self.store, device=self.device)


def enlarge(image: Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """Nearest-neighbour upscale by a whole factor so each generated pixel stays a crisp square."""
    factor = max(1, side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def progress_bar(job: dict, part: str, unit: str) -> str:
    """A job's progress as an HTML bar: its parts (rounds, settings) done plus the share of the
    current one, e.g. 'round 2/4, step 150/300'."""
    parts = max(1, job["rounds"] or 1)
    done = min(job["round"], parts)
    within = job["step"] / job["total"] if job["total"] and done < parts else 0.0
    frac = 1.0 if job["status"] == "succeeded" else min(1.0, (done + within) / parts)
    return (f'<progress value="{frac:.3f}" max="1" style="width:160px"></progress> {100 * frac:.0f}% '
            f'<small>{part} {min(done + 1, parts)}/{parts}, {unit} {job["step"]}/{job["total"]}</small>')
