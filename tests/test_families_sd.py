"""The SD family (SD 1.x / 2.x / SDXL) on tiny random pipelines saved to disk and loaded by path:
parity with diffusers' own pipelines, schedules, students, saving, sizes, the CLI."""

import json

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from families_parity import assert_same, lab_run, pipeline_run
from PIL import Image

from engine import registry
from engine.cli import main
from engine.errors import UsageError
from engine.families.schedules import VPSchedule, output_from_x0, x0_from_output
from engine.families.sd import SDFamily, SDXLFamily

SD15_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)


@pytest.fixture(scope="module")
def sd(tiny_pipeline):
    return registry.load(str(tiny_pipeline("sd")), device="cpu")


def _sd_pipe(path, scheduler_cls, **overrides):
    """The pipeline with another scheduler that keeps the model's timestep spacing ("leading")."""
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **{"timestep_spacing": "leading", **overrides})
    return pipe


def test_a_diffusers_directory_loads_as_its_family(tiny_pipeline, sd):
    assert isinstance(sd, SDFamily) and sd.name == "sd" and sd.prediction_type == "epsilon"
    assert isinstance(registry.load(str(tiny_pipeline("sdxl")), device="cpu"), SDXLFamily)
    assert registry.load(str(tiny_pipeline("sd-v")), device="cpu").prediction_type == "v_prediction"
    assert sd.default_size == 64 and sd.vae_factor == 8 and not sd.guidance_embedded
    # PNDM's spacing ("leading", a class default not written in its config) carries over to the grid
    assert (sd.schedule.grid(4).t[:-1] * 999).round().tolist() == [751, 501, 251, 1]


@pytest.mark.parametrize("scheduler", [EulerDiscreteScheduler, DDIMScheduler])
def test_sd15_epsilon_matches_the_diffusers_pipeline(tiny_pipeline, sd, scheduler):
    # DDIM (eta 0) and Euler are the same step; DDIM matches when its last step ends clean.
    extra = {"set_alpha_to_one": True, "clip_sample": False} if scheduler is DDIMScheduler else {}
    lab = lab_run(sd, steps=4, guidance=3.0, seed=5)
    ref = pipeline_run(_sd_pipe(tiny_pipeline("sd"), scheduler, **extra), steps=4, seed=5, guidance_scale=3.0)
    assert_same(lab[:2], ref)
    assert lab[2].nfe == 8


def test_sd2_v_prediction_matches_the_diffusers_pipeline(tiny_pipeline):
    fam = registry.load(str(tiny_pipeline("sd-v")), device="cpu")
    lab = lab_run(fam, steps=5, guidance=4.0, seed=1)
    ref = pipeline_run(_sd_pipe(tiny_pipeline("sd-v"), EulerDiscreteScheduler), steps=5, seed=1, guidance_scale=4.0)
    assert_same(lab[:2], ref)


def test_sdxl_matches_its_pipeline_with_zeroed_empty_prompt(tiny_pipeline):
    fam = registry.load(str(tiny_pipeline("sdxl")), device="cpu")
    lab = lab_run(fam, steps=4, guidance=5.0, seed=2)
    ref = pipeline_run(StableDiffusionXLPipeline.from_pretrained(tiny_pipeline("sdxl")), steps=4, seed=2,
                       guidance_scale=5.0)
    assert_same(lab[:2], ref)
    empty = fam.encode([""])
    assert empty.tensors["hidden"].abs().max() == 0 and empty.tensors["pooled"].abs().max() == 0


def test_zero_snr_v_student_matches_the_pipeline_with_that_scheduler(tiny_pipeline, sd):
    student = sd.with_parameterization("v_prediction", zero_snr=True)
    assert student.schedule.zero_snr and sd.schedule.prediction_type == "epsilon"  # the teacher is unchanged
    lab = lab_run(student, steps=4, guidance=2.0, seed=3)
    ref = pipeline_run(_sd_pipe(tiny_pipeline("sd"), EulerDiscreteScheduler, prediction_type="v_prediction",
                                rescale_betas_zero_snr=True, timestep_spacing="trailing"),
                       steps=4, seed=3, guidance_scale=2.0)
    # diffusers runs this in sigma/alpha space where the first sigma is 4096: float32 costs ~1e-4 there.
    assert_same(lab[:2], ref, atol=3e-4)


def test_vp_grid_is_diffusers_leading_spacing_and_ends_clean():
    s = VPSchedule(EulerDiscreteScheduler(**SD15_BETAS, timestep_spacing="leading").config)
    g = s.grid(4)
    assert (g.t[:-1] * 999).round().tolist() == [751, 501, 251, 1]
    assert g.alpha[-1] == 1 and g.sigma[-1] == 0
    assert torch.allclose(g.alpha**2 + g.sigma**2, torch.ones(5))
    a, sig = (v.float() for v in s.alpha_sigma(g.t[:-1]))  # the continuous schedule agrees with the grid at its points
    assert torch.allclose(a, g.alpha[:-1], atol=1e-6) and torch.allclose(sig, g.sigma[:-1], atol=1e-6)
    abar = DDIMScheduler(**SD15_BETAS).alphas_cumprod
    assert a[0].item() == pytest.approx(abar[751].sqrt().item(), rel=1e-5)


def test_zero_snr_schedule_reaches_pure_noise_and_refuses_epsilon():
    s = VPSchedule(EulerDiscreteScheduler(**SD15_BETAS, prediction_type="v_prediction").config)
    z = s.with_parameterization(zero_snr=True)
    a1, _ = z.alpha_sigma(torch.tensor([1.0]))
    assert a1.item() < 1e-3 and s.alpha_sigma(torch.tensor([1.0]))[0].item() > 0.05
    assert z.grid(4).t[0].item() == 1.0  # trailing spacing starts at the last timestep
    with pytest.raises(UsageError, match="v_prediction"):
        s.with_parameterization("epsilon", zero_snr=True)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample", "flow"])
def test_output_x0_conversions_invert_each_other(kind):
    torch.manual_seed(0)
    z, x0 = torch.randn(2, 3), torch.randn(2, 3)
    alpha, sigma = (torch.tensor([0.3, 0.8]).view(2, 1), torch.tensor([0.7, 0.2]).view(2, 1))
    if kind != "flow":
        sigma = (1 - alpha**2).sqrt()
    else:
        alpha = 1 - sigma
    out = output_from_x0(x0, z, alpha, sigma, kind)
    assert torch.allclose(x0_from_output(out, z, alpha, sigma, kind), x0, atol=1e-5)
    eps = (z - alpha * x0) / sigma
    expected = {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0, "flow": eps - x0}[kind]
    assert torch.allclose(out, expected, atol=1e-5)


def test_guidance_student_starts_as_the_conditional_teacher(sd):
    student = sd.with_guidance_input()
    assert student.guidance_embedded and not sd.guidance_embedded
    assert student.denoiser is not sd.denoiser and student.pipe is sd.pipe
    torch.manual_seed(0)
    z, t = torch.randn(1, 4, 8, 8), torch.tensor([0.6])
    cond = sd.encode(["a cat"])
    with torch.no_grad():
        want = sd.x0(z, t, cond)
        assert torch.allclose(student.x0(z, t, cond, torch.tensor([7.0])), want, atol=1e-5)
        student.denoiser.time_embedding.cond_proj.weight.normal_()
        assert not torch.allclose(student.x0(z, t, cond, torch.tensor([7.0])), want, atol=1e-3)


def test_saved_student_loads_back_with_its_schedule(sd, tmp_path):
    student = sd.with_parameterization("v_prediction", zero_snr=True).with_guidance_input()
    with torch.no_grad():
        student.denoiser.time_embedding.cond_proj.weight.normal_()
    student.save(tmp_path / "student", dtype=torch.float32, extra={"parent": "tiny"})
    meta = json.loads((tmp_path / "student" / "lab.json").read_text())
    assert meta["family"] == "sd" and meta["parent"] == "tiny"
    back = registry.load(str(tmp_path / "student"), device="cpu")
    assert back.schedule.zero_snr and back.prediction_type == "v_prediction" and back.guidance_embedded
    torch.manual_seed(0)
    z, t, cond = torch.randn(1, 4, 8, 8), torch.tensor([0.5]), sd.encode(["a cat"])
    with torch.no_grad():
        assert torch.allclose(back.x0(z, t, cond, torch.tensor([3.0])), student.x0(z, t, cond, torch.tensor([3.0])),
                              atol=1e-5)


def test_sizes_must_be_multiples_of_the_vae_factor(sd):
    sd.check_size(64, 128)
    with pytest.raises(UsageError, match="multiples of 8"):
        sd.check_size(60, 64)
    assert sd.noise_shape(2, 64, 128) == (2, 4, 8, 16)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_cli_generates_from_a_diffusers_directory(tiny_pipeline, tmp_path, capsys, kind):
    out = tmp_path / "img.png"
    code = main(["generate", "--model", str(tiny_pipeline(kind)), "--prompt", "a red cube", "--steps", "3",
                 "--guidance", "4", "--height", "64", "--width", "64", "--out", str(out),
                 "--data-dir", str(tmp_path / "data"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["nfe"] == 6 and (rec["height"], rec["width"]) == (64, 64)
    assert Image.open(out).size == (64, 64)
