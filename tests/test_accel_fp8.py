"""FP8 modes (engine/accel/fp8.py): memory, closeness, exact restore, and the refusal on a CPU."""

import copy

import pytest
import torch

from engine.accel.fp8 import FP8Config, _to_float8_compute, apply_fp8, fp8_mode, param_mem_mb, remove_fp8
from engine.accel.hooks import is_clean
from engine.errors import UsageError
from engine.sampling import sample


def test_weights_mode_cuts_parameter_memory_and_restores_exactly(tiny_family):
    unet = tiny_family.denoiser
    before = copy.deepcopy(unet.state_dict())
    kw = dict(steps=3, guidance=4.0, seeds=[5], height=32, width=32)
    base, _ = sample(tiny_family, ["a red circle"], **kw)
    mem = param_mem_mb(unet)
    apply_fp8(unet, FP8Config("weights"))
    assert fp8_mode(unet) == "weights"
    assert param_mem_mb(unet) <= 0.6 * mem  # float32 -> float8 on all but norms and the thin in/out convs
    assert unet.down_blocks[0].resnets[0].conv1.weight.dtype == torch.float8_e4m3fn
    assert unet.conv_in.weight.dtype == torch.float32
    img, _ = sample(tiny_family, ["a red circle"], **kw)
    assert unet.down_blocks[0].resnets[0].conv1.weight.dtype == torch.float8_e4m3fn  # stored back after use
    remove_fp8(unet)
    assert fp8_mode(unet) == "off" and is_clean(unet)
    assert all(v.dtype == before[k].dtype and torch.equal(before[k], v) for k, v in unet.state_dict().items())
    diff = (img.float() - base.float()).abs().mean()
    assert 0 < diff < 8  # float8 rounding changes the image a little, not wholesale
    again, _ = sample(tiny_family, ["a red circle"], **kw)
    assert torch.equal(again, base)


def test_weights_mode_on_bfloat16_halves_linear_memory():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 64)).to(torch.bfloat16)
    mem = param_mem_mb(net)
    apply_fp8(net, FP8Config("weights"))
    assert param_mem_mb(net) == pytest.approx(mem / 2, rel=0.05)  # bf16 (2 bytes) -> fp8 (1 byte); bias too
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    y = net(x)
    assert y.dtype == torch.bfloat16
    remove_fp8(net)


def test_compute_mode_is_refused_on_a_cpu_with_the_reason(tiny_family):
    with pytest.raises(UsageError, match=r"fp8 compute: .*compute capability >= 8.9.*cpu.*'weights'"):
        apply_fp8(tiny_family.denoiser, FP8Config("compute"))
    assert fp8_mode(tiny_family.denoiser) == "off" and is_clean(tiny_family.denoiser)


def test_float8_linear_matches_the_linear_it_replaces():
    """The compute path's arithmetic (torch._scaled_mm also runs on a CPU, so it is checked here)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(), torch.nn.Linear(48, 16), torch.nn.Linear(16, 5))
    x = torch.randn(7, 32)
    ref = net(x)
    saved = _to_float8_compute(net, FP8Config("compute"))
    assert type(net[0]).__name__ == "Float8Linear" and type(net[3]) is torch.nn.Linear  # 5 is not a multiple of 16
    out = net(x)
    rel = (out - ref).norm() / ref.norm()
    assert 0 < rel < 0.1
    assert set(saved["modules"]) == {"0", "2"}


def test_unknown_mode_names_the_choices():
    with pytest.raises(UsageError, match="fp8 must be one of off, weights, compute"):
        apply_fp8(torch.nn.Linear(2, 2), FP8Config("fp4"))


@pytest.mark.parametrize("kind", ["sd", "sdxl", "flux", "flux2-klein", "sd3"])
def test_weights_mode_cuts_every_family_by_at_least_40_percent_in_bfloat16(kind):
    """bfloat16 -> float8 halves a cast layer; what stays (first and last layers) must be small."""
    from engine.families import synthetic

    pipe = synthetic.build(kind, seed=0)
    net = (pipe.unet if hasattr(pipe, "unet") else pipe.transformer).to(torch.bfloat16)
    before = copy.deepcopy(net.state_dict())
    mem = param_mem_mb(net)
    apply_fp8(net, FP8Config("weights"))
    assert param_mem_mb(net) <= 0.6 * mem
    remove_fp8(net)
    assert is_clean(net) and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("kind", ["flux", "flux2-klein"])
def test_weights_mode_leaves_a_flux_family_computing_in_its_own_dtype(tiny_pipeline, kind):
    """A FLUX transformer's first parameter is a cast linear's weight: under FP8 weights it is float8,
    which must not become the dtype of the latents and prompts (the matrix in test_speed_matrix.py samples)."""
    from engine import registry
    from engine.accel.runtime import accelerated

    fam = registry.load(str(tiny_pipeline(kind)), device="cpu")
    with accelerated(fam, fp8="weights"):
        assert next(fam.denoiser.parameters()).dtype == torch.float8_e4m3fn
        assert fam.dtype == torch.float32
        images, _ = sample(fam, ["a cat"], steps=2, guidance=3.0, seeds=[0], height=64, width=64)
    assert images.shape == (1, 64, 64, 3) and fam.dtype == torch.float32


def test_compute_mode_keeps_the_models_parameter_dtype():
    """Float8Linear's scale is a buffer, so a bfloat16 model's parameters say bfloat16 (or float8)."""
    net = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Linear(32, 16)).to(torch.bfloat16)
    _to_float8_compute(net, FP8Config("compute"))
    assert {p.dtype for p in net.parameters()} == {torch.float8_e4m3fn, torch.bfloat16}
    assert net[0].w_scale.dtype == torch.float32
