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
