"""The judge: a small CNN trained on the shapes world that reads an image's attributes.

It gives prompt adherence (does the image show every attribute its prompt states, GenEval-style,
and which does it miss) and a feature vector for Fréchet distances (the embedded domain's FID).
Trained by `python -m engine train-judge`; weights ship in assets/judge/.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..paths import JUDGE_WEIGHTS
from .scene import HEADS

IGNORE = -100  # label of a head that does not apply to a scene (a digit has no shape)


@dataclass
class JudgeConfig:
    width: int = 48  # channels of the first stage; doubled at each of the two downsamplings
    features: int = 256  # width of the feature vector used for Fréchet distances
    image_size: int = 32


class Judge(nn.Module):
    def __init__(self, config: JudgeConfig = JudgeConfig()):
        super().__init__()
        self.config = config
        w = config.width

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.GELU())

        self.trunk = nn.Sequential(
            block(3, w, 1), block(w, w, 1),
            block(w, 2 * w, 2), block(2 * w, 2 * w, 1),  # 16 x 16
            block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 1),  # 8 x 8
            block(4 * w, 4 * w, 2),  # 4 x 4: keeps where things are, for position and layout
        )
        side = config.image_size // 8
        self.project = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * side * side, config.features), nn.GELU())
        self.heads = nn.ModuleDict({name: nn.Linear(config.features, len(classes)) for name, classes in HEADS.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> (B, features)."""
        return self.project(self.trunk(images))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(images)
        return {name: head(f) for name, head in self.heads.items()}

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        save_file({k: v.detach().half().contiguous() for k, v in self.state_dict().items()},
                  directory / "model.safetensors")

    @classmethod
    def load(cls, directory: Path) -> Judge:
        if not (directory / "model.safetensors").exists():
            raise FileNotFoundError(f"no judge weights in {directory}: run `python -m engine train-judge`")
        model = cls(JudgeConfig(**json.loads((directory / "config.json").read_text())))
        model.load_state_dict({k: v.float() for k, v in load_file(directory / "model.safetensors").items()})
        return model.eval()


@lru_cache(maxsize=4)
def shipped(device: str = "cpu") -> Judge:
    """The shipped judge (assets/judge) on `device`, loaded once per device; read-only use."""
    return Judge.load(JUDGE_WEIGHTS).to(device).requires_grad_(False)


def to_tensor(images: list | np.ndarray) -> torch.Tensor:
    """PIL images or a (B, H, W, 3) uint8 array -> (B, 3, H, W) float in [-1, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images]) if isinstance(images, list) else images
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def labels_tensor(label_dicts: list[dict[str, str]]) -> dict[str, torch.Tensor]:
    """Per head, class indices (B,), IGNORE where the head does not apply."""
    out = {}
    for name, classes in HEADS.items():
        out[name] = torch.tensor([classes.index(d[name]) if name in d else IGNORE for d in label_dicts])
    return out


def loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    total = 0.0
    for name, target in labels.items():
        if (target != IGNORE).any():
            total = total + F.cross_entropy(logits[name], target, ignore_index=IGNORE)
    return total


@torch.no_grad()
def predict(judge: Judge, images: torch.Tensor, batch_size: int = 256) -> list[dict[str, str]]:
    """The judge's reading of each image: head -> predicted class."""
    preds = []
    device = next(judge.parameters()).device
    for i in range(0, len(images), batch_size):
        logits = judge(images[i:i + batch_size].to(device))
        idx = {name: lg.argmax(-1).tolist() for name, lg in logits.items()}
        for j in range(len(idx["kind"])):
            preds.append({name: HEADS[name][idx[name][j]] for name in HEADS})
    return preds


@torch.no_grad()
def features(judge: Judge, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    device = next(judge.parameters()).device
    return torch.cat([judge.features(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


def missed(stated: dict[str, str], pred: dict[str, str]) -> list[str]:
    """The stated attributes the image does not show (empty list: adherent).

    A pair prompt with no stated relation ("a red circle and a blue square") is satisfied by the
    two objects in either order.
    """
    if stated.get("unordered") and pred["kind"] == "pair":
        want = [(stated.get("shape_a"), stated.get("colour_a")), (stated.get("shape_b"), stated.get("colour_b"))]
        have = [(pred["shape_a"], pred["colour_a"]), (pred["shape_b"], pred["colour_b"])]

        def fits(w, h):
            return all(x is None or x == y for x, y in zip(w, h))

        if (fits(want[0], have[0]) and fits(want[1], have[1])) or (fits(want[0], have[1]) and fits(want[1], have[0])):
            return [k for k in ("kind", "background") if k in stated and stated[k] != pred[k]]
    return [k for k, v in stated.items() if k != "unordered" and pred.get(k) != v]
