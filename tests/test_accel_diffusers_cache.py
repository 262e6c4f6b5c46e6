"""Caches on tiny flow transformers: diffusers' hooks (one context per CFG branch, reset per call)
and the lab's TeaCache probes for FLUX.1 and FLUX.2 blocks."""

import copy

import pytest
import torch
from diffusers import Flux2Transformer2DModel, FluxTransformer2DModel

from engine.accel.calibrate import CalibrationConfig, calibrate_magcache
from engine.accel.diffusers_cache import (
    DiffusersCacheConfig,
    _state_managers,
    apply_diffusers_cache,
    remove_diffusers_cache,
)
from engine.accel.hooks import is_clean
from engine.accel.runtime import accelerated, supported_caches
from engine.accel.teacache import TeaCacheConfig, apply_teacache, remove_teacache
from engine.errors import UsageError
from engine.families.base import Conditioning, Family, FlowSchedule
from engine.sampling import sample


class TinyFlow(Family):
    """A FLUX-shaped family: packed tokens, 3-axis position ids, pooled text; random weights."""
    name = "tiny-flux"
    default_size = 4

    def __init__(self, flux2: bool = False):
        torch.manual_seed(0)
        self.flux2 = flux2
        common = dict(patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_single_layers=2,
                      attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16, guidance_embeds=False)
        if flux2:
            self.denoiser = Flux2Transformer2DModel(**common, timestep_guidance_channels=16,
                                                    axes_dims_rope=(2, 2, 2, 2)).eval()
        else:
            self.denoiser = FluxTransformer2DModel(**common, pooled_projection_dim=8, axes_dims_rope=(2, 2, 4)).eval()
        self.schedule = FlowSchedule()

    def encode(self, prompts):
        gens = [torch.Generator().manual_seed(len(p)) for p in prompts]
        return Conditioning({"hidden": torch.stack([torch.randn(3, 16, generator=g) for g in gens]),
                             "pooled": torch.stack([torch.randn(8, generator=g) for g in gens])})

    def noise_shape(self, b, h, w):
        return (b, 4, h, w)

    def x0(self, z, t, cond, guidance=None):
        b, c, h, w = z.shape
        x = z.flatten(2).transpose(1, 2)  # (B, h*w, C)
        grid = torch.meshgrid(torch.zeros(1), torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
        if self.flux2:
            ids = torch.stack((torch.zeros_like(grid[0]), *grid), -1).reshape(1, -1, 4).expand(b, -1, -1)
            out = self.denoiser(hidden_states=x, encoder_hidden_states=cond.tensors["hidden"], timestep=t,
                                img_ids=ids, txt_ids=torch.zeros(b, 3, 4), guidance=None, return_dict=False)[0]
        else:
            ids = torch.stack(grid, -1).reshape(-1, 3)  # (h*w, 3): no batch axis
            out = self.denoiser(hidden_states=x, encoder_hidden_states=cond.tensors["hidden"],
                                pooled_projections=cond.tensors["pooled"], timestep=t, img_ids=ids,
                                txt_ids=torch.zeros(3, 3), return_dict=False)[0]
        u = out.transpose(1, 2).reshape(b, c, h, w)
        return z - t.view(-1, 1, 1, 1) * u

    def decode(self, z):
        return ((z.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


KW = dict(steps=10, guidance=4.0, seeds=[0, 1], height=4, width=4)
PROMPTS = ["a", "bb"]


@pytest.fixture(scope="module")
def flux():
    return TinyFlow()


def test_first_block_cache_runs_per_branch_and_resets_per_call(flux):
    before = copy.deepcopy(flux.denoiser.state_dict())
    base, _ = sample(flux, PROMPTS, **KW)
    apply_diffusers_cache(flux.denoiser, DiffusersCacheConfig("fbcache", 0.5, steps=10))
    try:
        img, m = sample(flux, PROMPTS, **KW)
        contexts = {name for _, sm in _state_managers(flux.denoiser) for name in sm._state_cache}
        again, m2 = sample(flux, PROMPTS, **KW)
    finally:
        remove_diffusers_cache(flux.denoiser)
    assert contexts == {"uncond", "cond"}  # one cache state per CFG branch
    assert m.skipped > 0 and m.nfe + m.skipped == 20
    assert torch.equal(img, again) and m.skipped == m2.skipped  # nothing carried over between calls
    assert is_clean(flux.denoiser) and not flux.denoiser.is_cache_enabled
    assert all(torch.equal(before[k], v) for k, v in flux.denoiser.state_dict().items())
    assert torch.equal(sample(flux, PROMPTS, **KW)[0], base)


def test_first_block_cache_at_threshold_zero_is_the_uncached_model(flux):
    base, _ = sample(flux, PROMPTS, **KW)
    apply_diffusers_cache(flux.denoiser, DiffusersCacheConfig("fbcache", 0.0, steps=10))
    try:
        img, m = sample(flux, PROMPTS, **KW)
    finally:
        remove_diffusers_cache(flux.denoiser)
    assert m.skipped == 0 and (img.float() - base.float()).abs().max() <= 1  # branch-split batches: rounding only


def test_taylorseer_predicts_between_refreshes(flux):
    apply_diffusers_cache(flux.denoiser, DiffusersCacheConfig("taylorseer", 3, steps=10))
    try:
        _, m = sample(flux, PROMPTS, **KW)
    finally:
        remove_diffusers_cache(flux.denoiser)
    assert 0 < m.skipped < 20 and m.nfe + m.skipped == 20
    assert is_clean(flux.denoiser)


def test_magcache_calibrates_its_ratios_then_skips(flux):
    cal = calibrate_magcache(flux, CalibrationConfig(prompts=2, steps=10, guidance=4.0))
    assert len(cal["mag_ratios"]) == 10 and cal["mag_ratios"][0] == 1.0
    apply_diffusers_cache(flux.denoiser, DiffusersCacheConfig("magcache", 0.5, steps=10,
                                                              mag_ratios=tuple(cal["mag_ratios"])))
    try:
        _, m = sample(flux, PROMPTS, **KW)
    finally:
        remove_diffusers_cache(flux.denoiser)
    assert m.skipped > 0 and is_clean(flux.denoiser)


@pytest.mark.parametrize("flux2", [False, True], ids=["flux1", "flux2"])
def test_teacache_probes_flow_transformers(flux2):
    fam = TinyFlow(flux2)
    base, _ = sample(fam, PROMPTS, **KW)
    apply_teacache(fam.denoiser, TeaCacheConfig(threshold=0.0))
    try:
        same, m0 = sample(fam, PROMPTS, **KW)
    finally:
        remove_teacache(fam.denoiser)
    apply_teacache(fam.denoiser, TeaCacheConfig(threshold=0.5))
    try:
        _, m = sample(fam, PROMPTS, **KW)
    finally:
        remove_teacache(fam.denoiser)
    assert torch.equal(same, base) and m0.skipped == 0
    assert m.skipped > 0 and is_clean(fam.denoiser)


def test_supported_caches_per_model_class(flux, tiny_family):
    assert supported_caches(flux) == ["none", "teacache", "fbcache", "magcache", "taylorseer"]
    assert supported_caches(TinyFlow(flux2=True)) == ["none", "teacache", "taylorseer"]
    assert supported_caches(tiny_family) == ["none", "teacache"]
    with pytest.raises(UsageError, match="cache fbcache: .*UNet2DConditionModel; use teacache"):
        with accelerated(tiny_family, "fbcache"):
            pass
    assert is_clean(tiny_family.denoiser)


@pytest.mark.parametrize("kind", ["flux", "flux2-klein"])
def test_diffusers_and_lab_caches_on_the_flow_transformer_families(tiny_pipeline, kind):
    """The lab's real FLUX.1 / FLUX.2 klein adapters on tiny random pipelines, as `generate` runs them
    (at 256 pixels, not their native 1024: the caches work alike at any size)."""
    from engine import registry

    fam = registry.load(str(tiny_pipeline(kind)), device="cpu")
    kw = dict(steps=6, guidance=3.0, seeds=[0], height=256, width=256)
    base, _ = sample(fam, ["a cat on a mat"], **kw)
    method = "fbcache" if kind == "flux" else "taylorseer"  # FLUX.2 mixes block kinds, which FBCache cannot span
    assert method in supported_caches(fam) and "teacache" in supported_caches(fam)
    with accelerated(fam, f"{method}:{0.5 if method == 'fbcache' else 2}", steps=6) as acc:
        _, m = sample(fam, ["a cat on a mat"], **kw)
    assert acc.cache.startswith(method) and m.skipped > 0 and m.nfe + m.skipped == 12
    assert is_clean(fam.denoiser) and torch.equal(sample(fam, ["a cat on a mat"], **kw)[0], base)
    apply_teacache(fam.denoiser, TeaCacheConfig(threshold=0.5))
    try:
        _, m = sample(fam, ["a cat on a mat"], **kw)
    finally:
        remove_teacache(fam.denoiser)
    assert m.skipped > 0 and is_clean(fam.denoiser)


def test_teacache_on_the_sd_family(tiny_pipeline):
    from engine import registry

    fam = registry.load(str(tiny_pipeline("sd")), device="cpu")
    size = fam.default_size
    kw = dict(steps=6, guidance=3.0, seeds=[0], height=size, width=size)
    base, _ = sample(fam, ["a cat on a mat"], **kw)
    assert supported_caches(fam) == ["none", "teacache"]
    apply_teacache(fam.denoiser, TeaCacheConfig(threshold=0.5))
    try:
        _, m = sample(fam, ["a cat on a mat"], **kw)
    finally:
        remove_teacache(fam.denoiser)
    assert m.skipped > 0 and m.nfe + m.skipped == 12 and is_clean(fam.denoiser)
    assert torch.equal(sample(fam, ["a cat on a mat"], **kw)[0], base)
