"""The distillation targets against hand computation (Meng et al. 2023; Salimans & Ho 2022)."""

import math

import pytest
import torch

from engine.distill.targets import (
    guided_x0_target,
    teacher_two_steps,
    truncated_snr_weight,
    two_step_x0_target,
    weighted_x0_loss,
)
from engine.sampling import ddim_step


def vp(t):  # a variance-preserving schedule for the checks: alpha = cos, sigma = sin
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def test_guided_target_is_the_cfg_combine_per_sample():
    xu = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    xc = torch.tensor([[2.0, 3.0], [1.0, 1.0]])
    s = torch.tensor([1.0, 4.0])
    expected = torch.tensor([[2.0, 3.0], [4.0, -2.0]])  # s=1: cond; s=4: 0 + 4 * (1 - 0), 2 + 4 * (1 - 2)
    assert torch.allclose(guided_x0_target(xu, xc, s), expected)


def test_two_step_target_by_hand():
    z_t, z_s = torch.tensor([0.5]), torch.tensor([0.3])
    a_t, s_t, a_s, s_s = 0.6, 0.8, 0.8, 0.6
    ratio = 0.6 / 0.8
    expected = (0.3 - ratio * 0.5) / (0.8 - ratio * 0.6)
    assert two_step_x0_target(z_t, z_s, a_t, s_t, a_s, s_s).item() == pytest.approx(expected)


@pytest.mark.parametrize("t,s", [(0.9, 0.5), (0.5, 0.25), (0.3, 0.0), (1.0, 0.5)])
def test_one_student_step_with_the_target_lands_on_the_teachers_two_steps(t, s):
    torch.manual_seed(0)
    z_t = torch.randn(3, 4, dtype=torch.float64)
    m = (t + s) / 2

    def x0_fn(z, tt):  # an arbitrary nonlinear "teacher"
        return torch.tanh(z * (1 + tt.view(-1, 1))) * 0.7

    tt = lambda v: torch.full((3,), v, dtype=torch.float64)  # noqa: E731
    z_s = teacher_two_steps(x0_fn, z_t, tt(t), tt(m), tt(s), vp)
    (a_t, s_t), (a_s, s_s) = vp(t), vp(s)
    x0_target = two_step_x0_target(z_t, z_s, a_t, s_t, a_s, s_s)
    assert torch.allclose(ddim_step(z_t, x0_target, a_t, s_t, a_s, s_s), z_s, atol=1e-10)


def test_teacher_two_steps_are_two_ddim_steps():
    z = torch.tensor([[0.2, -0.4]], dtype=torch.float64)
    x0_fn = lambda z, t: z * 0.5  # noqa: E731
    one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    (a1, s1), (a2, s2), (a3, s3) = vp(0.8), vp(0.6), vp(0.4)
    z_m = ddim_step(z, z * 0.5, a1, s1, a2, s2)
    manual = ddim_step(z_m, z_m * 0.5, a2, s2, a3, s3)
    assert torch.allclose(teacher_two_steps(x0_fn, z, one(0.8), one(0.6), one(0.4), vp), manual)


def test_truncated_snr_weight():
    w = truncated_snr_weight(torch.tensor([0.6, 0.9, 0.0]), torch.tensor([0.8, 0.1, 1.0]))
    assert torch.allclose(w, torch.tensor([1.0, 81.0, 1.0]))


def test_weighted_loss_by_hand():
    x0_hat = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    # sample 0: mse 1, SNR 81 -> 81; sample 1: mse 2, SNR 0.5625 -> weight 1 -> 2; mean 41.5
    loss = weighted_x0_loss(x0_hat, target, torch.tensor([0.9, 0.6]), torch.tensor([0.1, 0.8]))
    assert loss.item() == pytest.approx(41.5)
