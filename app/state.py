"""What every tab shares: the store and model loading, on the device the app was started with."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from engine import jobs, registry
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


def progress_bar(job: dict) -> str:
    """A job's progress as an HTML bar and its words, e.g. 'round 2/4, step 150/300'."""
    fraction, text = jobs.progress(job)
    return (f'<progress value="{fraction:.3f}" max="1" style="width:160px"></progress> {100 * fraction:.0f}% '
            f'<small>{text}</small>')
