"""The quality metrics of an evaluation run (DESIGN §7), on images as uint8 (B, H, W, 3) tensors.

- distribution: Fréchet distance (Heusel et al. 2017) between the candidate's and the teacher's
  images, computed by torchmetrics' `FrechetInceptionDistance` in the space of a feature network:
  the judge's features on the embedded domain, Inception-v3 pool features (torchmetrics through
  torch-fidelity, weights from the user's cache or path) for real models, or any module passed in;
- prompt adherence: CLIP score (Hessel et al. 2021; torchmetrics' `CLIPScore`) with a CLIP model
  the user gives (a transformers directory);
- closeness to the teacher at the same seed: PSNR and the cosine distance of feature vectors.

A metric that needs something the user has not provided is `Unavailable(reason)`, never a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception weights


@dataclass(frozen=True)
class Unavailable:
    """A metric that could not be computed, and why (shown in place of its number)."""
    reason: str


# -- closeness to the teacher ------------------------------------------------------------------------
def cosine_distance(features: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """Per row 1 - cos(f, f_ref): 0 for the same image, up to 2."""
    return (1 - F.cosine_similarity(features.double(), reference.double(), dim=1)).clamp(min=0).tolist()


def to_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> uint8 (B, 3, H, W), the layout torchmetrics' image metrics take."""
    return images.permute(0, 3, 1, 2).contiguous()


# -- feature spaces for Fréchet distances ----------------------------------------------------------
class JudgeFeatures(nn.Module):
    """The embedded judge as a torchmetrics feature extractor: uint8 (B, 3, H, W) -> (B, features)."""

    def __init__(self, judge: nn.Module, image_size: int = 32):
        super().__init__()
        self.judge = judge
        self.image_size = image_size

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:  # torchmetrics probes at 299 x 299
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        device = next(self.judge.parameters()).device
        return self.judge.features(x.to(device)).double().cpu()


def inception_weights(path: str | None) -> Path | Unavailable:
    """The FID Inception weights: `path`, else torch-fidelity's file in the torch hub cache."""
    if path:
        p = Path(path).expanduser()
        return p if p.is_file() else Unavailable(f"no Inception weights at {str(p)!r}")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if cached.is_file():
        return cached
    return Unavailable(f"no Inception weights: give --inception PATH (torch-fidelity's {INCEPTION_FILE}) "
                       f"or put the file in {cached.parent}")


def inception_fid_space(path: str | None) -> dict | Unavailable:
    """torchmetrics' Inception-v3 feature space with the user's weights (never downloaded)."""
    weights = inception_weights(path)
    if isinstance(weights, Unavailable):
        return weights
    try:
        import torch_fidelity  # noqa: F401 - torchmetrics' Inception network comes from torch-fidelity
    except ImportError:
        return Unavailable("Inception FID needs torch-fidelity (pip install torch-fidelity, with the "
                           "torchvision that matches your torch)")
    return {"feature": 2048, "feature_extractor_weights_path": str(weights)}


def frechet_distance(images: torch.Tensor, reference: torch.Tensor, space: nn.Module | dict) -> float | Unavailable:
    """FID of uint8 images (B, H, W, 3) against the reference images, in a feature space: a module
    (uint8 (B, 3, H, W) -> (B, D)) or keyword arguments for torchmetrics' Inception network."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(images) < 2 or len(reference) < 2:
        return Unavailable(f"FID needs at least 2 images on each side, got {len(images)} and {len(reference)}")
    kwargs = {"feature": space} if isinstance(space, nn.Module) else dict(space)
    # Every image is here already (under `accelerate launch` the main process scores them all):
    # no gathering from other processes.
    metric = FrechetInceptionDistance(normalize=False, sync_on_compute=False, **kwargs)
    metric.update(to_nchw(reference), real=True)
    metric.update(to_nchw(images), real=False)
    value = float(metric.compute())
    return max(0.0, value)  # the matrix square root leaves ~1e-6 of noise around 0 for identical sets


# -- CLIP score -----------------------------------------------------------------------------------
class _ProjectedCLIP(nn.Module):
    """A transformers CLIPModel whose get_*_features return the projected embedding tensors, as
    torchmetrics' CLIPScore expects (transformers 5 returns output objects)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args, **kwargs):
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def load_clip(path: str | None) -> tuple[nn.Module, object] | Unavailable:
    """A CLIP model and processor from a local transformers directory or cached hub id (never downloaded)."""
    if not path:
        return Unavailable("CLIP score needs a CLIP model: give --clip-model PATH (a transformers CLIP directory)")
    from transformers import CLIPModel, CLIPProcessor

    p = Path(path).expanduser()
    if not p.exists() and (path.startswith((".", "/", "~")) or path.count("/") > 1):
        return Unavailable(f"no CLIP model at {path!r}")
    source = str(p) if p.exists() else path
    try:
        model = CLIPModel.from_pretrained(source, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as e:
        return Unavailable(f"could not load a CLIP model from {path!r}: {str(e).splitlines()[0][:200]}")
    return _ProjectedCLIP(model), processor


@torch.no_grad()
def clip_scores(images: torch.Tensor, texts: list[str], clip: tuple[nn.Module, object]) -> list[float]:
    """Per image CLIP score, 100 * max(cos(image, text), 0), by torchmetrics' CLIPScore."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    model, processor = clip
    metric = CLIPScore(model_name_or_path=lambda: (model, processor), sync_on_compute=False)
    out = []
    for image, text in zip(to_nchw(images), texts):
        metric.update(image, text)
        out.append(float(metric.compute()))
        metric.reset()
    return out


@torch.no_grad()
def clip_image_features(images: torch.Tensor, clip: tuple[nn.Module, object]) -> torch.Tensor:
    """CLIP image embeddings (B, D): a feature space for the distance to the teacher."""
    model, processor = clip
    pixels = processor(images=list(to_nchw(images)), return_tensors="pt")["pixel_values"]
    device = next(model.parameters()).device
    return model.get_image_features(pixel_values=pixels.to(device)).double().cpu()

