import math

import pytest
import torch

from engine.families.base import Conditioning, Family, FlowSchedule
from engine.sampling import Guided, cfg_combine, ddim_step, sample


def test_ddim_step_matches_hand_computation():
    z_t, x0 = torch.tensor([0.7]), torch.tensor([0.2])
    a_t, s_t, a_s, s_s = 0.6, 0.8, 0.9, math.sqrt(1 - 0.81)
    eps = (0.7 - 0.6 * 0.2) / 0.8  # 0.725
    expected = 0.9 * 0.2 + math.sqrt(0.19) * eps
    assert ddim_step(z_t, x0, a_t, s_t, a_s, s_s).item() == pytest.approx(expected, rel=1e-6)


def test_ddim_step_is_the_euler_step_for_rectified_flow():
    torch.manual_seed(0)
    z, x0 = torch.randn(5), torch.randn(5)
    t, s = 0.7, 0.4
    u = (z - x0) / t  # velocity implied by x0_hat: z = x0 + t * u
    euler = z + (s - t) * u
    assert torch.allclose(ddim_step(z, x0, 1 - t, t, 1 - s, s), euler, atol=1e-6)


def test_last_step_returns_x0():
    z, x0 = torch.randn(4), torch.randn(4)
    assert torch.allclose(ddim_step(z, x0, 0.5, 0.5, 1.0, 0.0), x0)


def test_cfg_combine_in_diffusers_convention():
    u, c = torch.tensor([1.0]), torch.tensor([3.0])
    assert cfg_combine(u, c, 1.0).item() == 3.0  # s = 1: the conditional output
    assert cfg_combine(u, c, 0.0).item() == 1.0  # s = 0: the unconditional output
    assert cfg_combine(u, c, 7.5).item() == 1.0 + 7.5 * 2.0


def test_flow_grid_runs_from_noise_to_clean():
    g = FlowSchedule().grid(4)
    assert g.t.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert torch.allclose(g.alpha + g.sigma, torch.ones(5))


class Recorder(Family):
    """A fake family whose x0 is a known function of the conditioning, counting passes."""
    name = "fake"

    def __init__(self, guidance_embedded=False):
        self.denoiser = torch.nn.Linear(1, 1)
        self.schedule = FlowSchedule()
        self.guidance_embedded = guidance_embedded
        self.calls = []

    def encode(self, prompts):
        return Conditioning({"c": torch.tensor([[0.0 if p == "" else 1.0] for p in prompts])})

    def noise_shape(self, batch, h, w):
        return (batch, 1, h, w)

    def x0(self, z, t, cond, guidance=None):
        self.calls.append((z.shape[0], guidance))
        return torch.zeros_like(z) + cond.tensors["c"].view(-1, 1, 1, 1)

    def decode(self, z):
        return z


@pytest.mark.parametrize("guidance,passes", [(1.0, 1), (5.0, 2)])
def test_nfe_counts_two_passes_per_step_under_cfg(guidance, passes):
    fam = Recorder()
    _, m = sample(fam, ["a", "b"], steps=6, guidance=guidance, seeds=[0, 1], height=2, width=2)
    assert m.nfe == 6 * passes
    assert len(fam.calls) == 6  # CFG's two branches run as one batched forward
    assert {c[0] for c in fam.calls} == {2 * passes}


def test_cfg_is_applied_to_the_batched_passes():
    fam = Recorder()
    model = Guided.build(fam, ["a"], 4.0)
    out = model(torch.zeros(1, 1, 2, 2), torch.tensor([0.5]))
    assert torch.allclose(out, torch.full((1, 1, 2, 2), 0.0 + 4.0 * (1.0 - 0.0)))


def test_guidance_embedded_family_runs_one_pass_with_the_scale():
    fam = Recorder(guidance_embedded=True)
    _, m = sample(fam, ["a"], steps=3, guidance=6.0, seeds=[0], height=2, width=2)
    assert m.nfe == 3
    assert all(g is not None and float(g[0]) == 6.0 for _, g in fam.calls)


def test_same_seed_same_image_and_seeds_differ(tiny_family):
    a, _ = sample(tiny_family, ["a red circle"] * 2, steps=3, guidance=3.0, seeds=[7, 8], height=32, width=32)
    b, _ = sample(tiny_family, ["a red circle"], steps=3, guidance=3.0, seeds=[7], height=32, width=32)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[0], a[1])
    assert a.dtype == torch.uint8 and a.shape == (2, 32, 32, 3)


def test_measurement_is_recorded(tiny_family):
    _, m = sample(tiny_family, ["a star"], steps=2, guidance=5.0, seeds=[0], height=32, width=32)
    assert m.nfe == 4 and m.seconds > 0 and m.peak_mem_mb > 0 and m.skipped == 0
