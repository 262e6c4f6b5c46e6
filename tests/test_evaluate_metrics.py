"""The evaluation metrics: formulas checked independently, and the code paths a user with real
weights takes (a CLIP directory, a feature network) exercised with tiny random networks."""

import numpy as np
import pytest
import scipy.linalg
import torch
from evaluate_fixtures import TinyFeatures, save_tiny_clip

from engine.evaluate import metrics as M


def images(seed, n=24, lo=0, hi=256, side=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (n, side, side, 3), generator=g, dtype=torch.uint8)


def test_cosine_distance():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    r = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [3.0, 0.0]])
    assert M.cosine_distance(f, r) == pytest.approx([0.0, 2.0, 1.0])


def frechet_reference(f1: np.ndarray, f2: np.ndarray) -> float:
    """Heusel et al. 2017, eq. 6, with scipy's matrix square root (independent of torchmetrics)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_with_a_feature_network_passed_in():
    net = TinyFeatures()
    a, b = images(0), images(1, lo=0, hi=128)  # b is darker: a different distribution
    assert M.frechet_distance(a, a, net) == pytest.approx(0.0, abs=1e-6)
    fa, fb = net(M.to_nchw(a)).numpy(), net(M.to_nchw(b)).numpy()
    assert M.frechet_distance(b, a, net) == pytest.approx(frechet_reference(fb, fa), rel=1e-4)
    assert M.frechet_distance(b, a, net) > 0.01
    assert isinstance(M.frechet_distance(a[:1], a, net), M.Unavailable)


def test_judge_features_take_any_size_of_uint8_image():
    from engine.world.judge import Judge, JudgeConfig

    torch.manual_seed(0)
    space = M.JudgeFeatures(Judge(JudgeConfig(width=8, features=16)).eval())
    assert space(torch.zeros(2, 3, 299, 299, dtype=torch.uint8)).shape == (2, 16)  # torchmetrics probes at 299
    a = images(2)
    assert torch.allclose(space(M.to_nchw(a)), space(M.to_nchw(a)))


def test_clip_score_from_a_clip_directory(tmp_path):
    clip = M.load_clip(str(save_tiny_clip(tmp_path / "clip")))
    assert not isinstance(clip, M.Unavailable), clip
    model, processor = clip
    imgs, texts = images(3, n=3), ["a red star", "a blue circle on the left", "the digit 7"]
    scores = M.clip_scores(imgs, texts, clip)
    # independently: 100 * max(cos(image embedding, text embedding), 0) straight from transformers
    with torch.no_grad():
        pix = processor(images=list(M.to_nchw(imgs)), return_tensors="pt")["pixel_values"]
        tok = processor(text=texts, return_tensors="pt", padding=True)
        ie = model.model.get_image_features(pixel_values=pix).pooler_output
        te = model.model.get_text_features(input_ids=tok["input_ids"],
                                           attention_mask=tok["attention_mask"]).pooler_output
    expected = (100 * torch.nn.functional.cosine_similarity(ie, te)).clamp(min=0)
    assert scores == pytest.approx(expected.tolist(), abs=1e-3)
    assert M.clip_image_features(imgs, clip).shape == (3, 16)


def test_what_the_user_has_not_provided_is_unavailable_with_the_reason(tmp_path, monkeypatch):
    assert "--clip-model" in M.load_clip(None).reason
    assert "no CLIP model at" in M.load_clip(str(tmp_path / "missing")).reason
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert "no Inception weights" in M.inception_fid_space(None).reason
    assert "no Inception weights at" in M.inception_fid_space(str(tmp_path / "w.pth")).reason
    weights = tmp_path / "hub" / "checkpoints" / M.INCEPTION_FILE
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    assert M.inception_weights(None) == weights
    found = M.inception_fid_space(None)
    try:
        import torch_fidelity  # noqa: F401
        assert found == {"feature": 2048, "feature_extractor_weights_path": str(weights)}
    except ImportError:
        assert "torch-fidelity" in found.reason
