"""TeaCache (engine/accel/teacache.py): per-row decisions, first/last steps, no leaks, clean removal."""

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel

from engine.accel.hooks import is_clean
from engine.accel.teacache import TeaCacheConfig, apply_teacache, remove_teacache
from engine.errors import UsageError
from engine.sampling import sample
from engine.trajectory import trajectory


class Toy(torch.nn.Module):
    """out = first(x) + 10 * c + k: `first` is the probe, c a per-row constant, k set per step."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Identity()
        self.k = 0.0
        self.batches = []  # batch size of every full forward

    def forward(self, x, c):
        h = self.first(x)
        self.batches.append(x.shape[0])
        return h * 0 + 10 * c.view(-1, 1) + self.k


def run_steps(model, xs, c):
    outs = []
    with trajectory(steps=len(xs), images=len(c)) as traj:
        for step, x in enumerate(xs):
            traj.step = step
            model.k = float(step)
            outs.append(model(x, c))
    return outs


def test_skipped_rows_reuse_their_own_output_and_first_and_last_steps_compute():
    model = Toy()
    apply_teacache(model, TeaCacheConfig(threshold=1.0, probe="first:input"))
    x = torch.ones(2, 3)
    c = torch.tensor([0.0, 1.0])  # two rows, as the uncond and cond halves of a CFG batch
    outs = run_steps(model, [x] * 5, c)  # the probe never changes: every middle step may skip
    assert model.batches == [2, 2]  # step 0 and the last step only
    for step in (1, 2, 3):
        assert torch.equal(outs[step], outs[0])  # each row its own cached output: 0 + 0 and 10 + 0
    assert outs[0][:, 0].tolist() == [0.0, 10.0]
    assert outs[4][:, 0].tolist() == [4.0, 14.0]


def test_only_the_rows_that_changed_run_the_network():
    model = Toy()
    apply_teacache(model, TeaCacheConfig(threshold=0.5, probe="first:input"))
    c = torch.tensor([0.0, 1.0])
    x0 = torch.ones(2, 3)
    x1 = torch.tensor([[1.0] * 3, [3.0] * 3])  # row 1 changes by 200 %, row 0 not at all
    outs = run_steps(model, [x0, x1, x1], c)
    assert model.batches == [2, 1, 2]  # step 1 re-runs row 1 alone
    assert outs[1][0, 0].item() == 0.0  # row 0: cached from step 0
    assert outs[1][1, 0].item() == 11.0  # row 1: computed at step 1 (10 * 1 + 1)


def test_threshold_zero_is_exactly_uncached_and_removal_restores_the_model(tiny_family):
    unet = tiny_family.denoiser
    before = copy.deepcopy(unet.state_dict())
    kw = dict(steps=4, guidance=4.0, seeds=[3, 4], height=32, width=32)
    base, _ = sample(tiny_family, ["a red star", "two circles"], **kw)
    apply_teacache(unet, TeaCacheConfig(threshold=0.0))
    cached, m = sample(tiny_family, ["a red star", "two circles"], **kw)
    remove_teacache(unet)
    assert torch.equal(base, cached) and m.skipped == 0 and m.nfe == 8
    assert is_clean(unet)
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    after, _ = sample(tiny_family, ["a red star", "two circles"], **kw)
    assert torch.equal(base, after)


def test_same_seed_twice_gives_the_same_image_and_nothing_leaks_between_images(tiny_family):
    apply_teacache(tiny_family.denoiser, TeaCacheConfig(threshold=0.3))
    try:
        kw = dict(steps=8, guidance=5.0, height=32, width=32)
        a1, m = sample(tiny_family, ["a blue square"], seeds=[1], **kw)
        sample(tiny_family, ["a green cross on the left"], seeds=[2], **kw)
        a2, m2 = sample(tiny_family, ["a blue square"], seeds=[1], **kw)
    finally:
        remove_teacache(tiny_family.denoiser)
    assert m.skipped > 0 and m.nfe + m.skipped == 16  # it did skip, and counts add up
    assert torch.equal(a1, a2) and m.skipped == m2.skipped


def test_calls_outside_sampling_are_plain_forwards(tiny_family):
    fam = tiny_family
    cond = fam.encode(["a star", "a star"])
    z = torch.randn(2, 3, 32, 32)
    t = torch.tensor([0.5, 0.5])
    ref = fam.x0(z, t, cond)
    apply_teacache(fam.denoiser, TeaCacheConfig(threshold=100.0))
    try:
        assert torch.equal(fam.x0(z, t, cond), ref)
        assert torch.equal(fam.x0(z * 0.5, t, cond), fam.x0(z * 0.5, t, cond))
        assert not torch.equal(fam.x0(z * 0.5, t, cond), ref)  # no cache without a trajectory
    finally:
        remove_teacache(fam.denoiser)


def test_teacache_runs_on_an_sd_shaped_unet():
    """An SD-style latent UNet (4 channels, eps prediction, cross-attention) under CFG."""
    from engine.families.base import Conditioning, Family, FlowSchedule

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=8).eval()

    class TinySD(Family):
        name = "tiny-sd"
        denoiser = unet
        schedule = FlowSchedule()

        def encode(self, prompts):
            return Conditioning({"hidden": torch.stack([torch.full((3, 16), float(len(p))) for p in prompts]) / 10})

        def noise_shape(self, b, h, w):
            return (b, 4, h, w)

        def x0(self, z, t, cond, guidance=None):
            eps = self.denoiser(z, t * 999, encoder_hidden_states=cond.tensors["hidden"], return_dict=False)[0]
            a, s = 1 - t.view(-1, 1, 1, 1), t.view(-1, 1, 1, 1).clamp_min(1e-3)
            return (z - s * eps) / a.clamp_min(1e-3)

        def decode(self, z):
            return ((z.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)

    fam = TinySD()
    kw = dict(steps=10, guidance=3.0, seeds=[0, 1], height=8, width=8)
    base, _ = sample(fam, ["a", "bbb"], **kw)
    apply_teacache(unet, TeaCacheConfig(threshold=0.2))
    try:
        img, m = sample(fam, ["a", "bbb"], **kw)
    finally:
        remove_teacache(unet)
    assert m.skipped > 0 and m.nfe + m.skipped == 20
    assert is_clean(unet)
    assert (img.float() - base.float()).abs().mean() < 20  # an approximation of the same images


def test_unknown_model_class_is_refused():
    with pytest.raises(UsageError, match="teacache.*no probe known for Linear"):
        apply_teacache(torch.nn.Linear(2, 2), TeaCacheConfig())
    with pytest.raises(UsageError, match="threshold"):
        apply_teacache(Toy(), TeaCacheConfig(threshold=-1, probe="first:input"))


def test_rows_to_recompute_take_sdxls_time_ids_but_not_flux_position_ids():
    """SDXL's added_cond_kwargs carry (B, 6) `time_ids`; FLUX.1's (seq, 3) position ids have no batch
    axis, even when seq happens to equal the batch."""
    from engine.accel.hooks import take_rows

    rows = torch.tensor([1, 3])
    kwargs = {"added_cond_kwargs": {"text_embeds": torch.randn(4, 8), "time_ids": torch.arange(24.0).view(4, 6)},
              "img_ids": torch.randn(4, 3), "txt_ids": torch.randn(4, 3), "hidden": torch.randn(4, 5)}
    part = take_rows(kwargs, rows, 4)
    for key in ("text_embeds", "time_ids"):
        assert torch.equal(part["added_cond_kwargs"][key], kwargs["added_cond_kwargs"][key][rows])
    assert part["img_ids"] is kwargs["img_ids"] and part["txt_ids"] is kwargs["txt_ids"]
    assert torch.equal(part["hidden"], kwargs["hidden"][rows])
