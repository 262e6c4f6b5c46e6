import numpy as np
import pytest
import torch

from engine.measure import PSNR_CAP, psnr_per_image


def test_psnr_matches_its_formula_and_caps_identical_images():
    a = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    b = a.clone()
    b[0] += 10  # MSE 100 -> 10 log10(255^2 / 100)
    assert psnr_per_image(b, a).tolist() == pytest.approx([10 * np.log10(255**2 / 100), PSNR_CAP])
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_per_image(a, a[:, :2])
