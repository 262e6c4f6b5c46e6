"""The one prompt type: what a sampler renders and a scorer checks, wherever prompts come from
(a golden set, the embedded world, an admin's typing)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prompt:
    text: str
    seed: int = 0  # the seed of the image's noise, so every model renders the prompt from the same start
    category: str | None = None  # a golden-set or world category; None: none given
    stated: dict = field(default_factory=dict, hash=False)  # attribute -> value, what the embedded judge checks

    def to_json(self) -> dict:
        """The golden-set line of this prompt."""
        d = {"prompt": self.text, "category": self.category, "seed": self.seed}
        if self.stated:
            d["stated"] = dict(self.stated)
        return d
