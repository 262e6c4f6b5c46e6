"""The flow-transformer families (FLUX.1, FLUX.2 klein, SD3) on tiny random pipelines saved to disk
and loaded by path: parity with diffusers' own pipelines, shifts, guidance students, sizes, CLI."""

import json

import pytest
import torch
from diffusers import Flux2KleinPipeline, FluxPipeline, StableDiffusion3Pipeline
from families_parity import assert_same, lab_run, pipeline_run
from PIL import Image

from engine import registry
from engine.cli import main
from engine.errors import UsageError
from engine.families.flux import FluxFamily
from engine.families.flux2 import Flux2Family
from engine.families.sd3 import SD3Family


def _load(tiny_pipeline, kind):
    return registry.load(str(tiny_pipeline(kind)), device="cpu")


def test_flux_without_guidance_embeds_matches_true_cfg(tiny_pipeline):
    fam = _load(tiny_pipeline, "flux")
    assert isinstance(fam, FluxFamily) and not fam.guidance_embedded
    pipe = FluxPipeline.from_pretrained(tiny_pipeline("flux"))
    lab = lab_run(fam, steps=4, guidance=3.0, seed=5)
    ref = pipeline_run(pipe, steps=4, seed=5, true_cfg_scale=3.0, negative_prompt="",
                       to_lab=lambda z: pipe._unpack_latents(z, 64, 64, 8))
    assert_same(lab[:2], ref)
    assert lab[2].nfe == 8


def test_flux_dev_takes_guidance_as_input_in_one_pass(tiny_pipeline):
    fam = _load(tiny_pipeline, "flux-dev")
    assert fam.guidance_embedded
    pipe = FluxPipeline.from_pretrained(tiny_pipeline("flux-dev"))
    lab = lab_run(fam, steps=3, guidance=3.5, seed=1)
    ref = pipeline_run(pipe, steps=3, seed=1, guidance_scale=3.5, to_lab=lambda z: pipe._unpack_latents(z, 64, 64, 8))
    assert_same(lab[:2], ref)
    assert lab[2].nfe == 3
    other = lab_run(fam, steps=3, guidance=1.5, seed=1)[0]  # the scale reaches the network
    assert (other - lab[0]).abs().max() > 1e-3


def test_flux2_klein_base_matches_its_pipeline(tiny_pipeline):
    fam = _load(tiny_pipeline, "flux2-klein")
    assert isinstance(fam, Flux2Family) and not fam.guidance_embedded
    assert fam.noise_shape(1, 64, 128) == (1, 16, 4, 8)  # patchified latents, as the pipeline draws them
    pipe = Flux2KleinPipeline.from_pretrained(tiny_pipeline("flux2-klein"))
    b, c = 1, fam.denoiser.config.in_channels
    lab = lab_run(fam, steps=4, guidance=4.0, seed=7)
    ref = pipeline_run(pipe, steps=4, seed=7, guidance_scale=4.0,
                       to_lab=lambda z: z.permute(0, 2, 1).reshape(b, c, 4, 4))
    assert_same(lab[:2], ref)
    # the VAE's batch-norm statistics are not the identity, so decoding must undo them
    assert fam.pipe.vae.bn.running_var.sub(1).abs().max() > 0.1


def test_sd3_matches_its_pipeline(tiny_pipeline):
    fam = _load(tiny_pipeline, "sd3")
    assert isinstance(fam, SD3Family) and fam.size_multiple == 16
    lab = lab_run(fam, steps=4, guidance=5.0, seed=2)
    ref = pipeline_run(StableDiffusion3Pipeline.from_pretrained(tiny_pipeline("sd3")), steps=4, seed=2,
                       guidance_scale=5.0)
    assert_same(lab[:2], ref)
    with pytest.raises(UsageError, match="guidance"):
        fam.with_guidance_input()


def test_flux_shift_grows_with_image_size(tiny_pipeline):
    fam = _load(tiny_pipeline, "flux")
    small, large = fam.schedule.grid(4, size=(256, 256)), fam.schedule.grid(4, size=(1024, 1024))
    assert small.t[0] == 1 and small.t[-1] == 0 and large.t[0] == 1
    assert (large.t[1:-1] > small.t[1:-1]).all()  # more tokens: more steps spent at high noise
    assert torch.allclose(small.alpha + small.sigma, torch.ones(5))
    # FLUX's shift: sigma' = e^mu / (e^mu + 1/sigma - 1), mu = 0.5 at 256 image tokens (1024^2 / 16^2 = 4096 -> 1.15)
    mu = 1.15
    expected = torch.exp(torch.tensor(mu)) / (torch.exp(torch.tensor(mu)) + 1 / torch.tensor(0.75) - 1)
    assert large.t[1].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["flux", "flux2-klein"])
def test_guidance_student_starts_as_the_conditional_teacher(tiny_pipeline, kind):
    fam = _load(tiny_pipeline, kind)
    student = fam.with_guidance_input()
    assert student.guidance_embedded and not fam.guidance_embedded and student.pipe is fam.pipe
    torch.manual_seed(0)
    z, t = torch.randn(fam.noise_shape(1, 64, 64)), torch.tensor([0.7])
    cond = fam.encode(["a cat"])
    with torch.no_grad():
        want = fam.x0(z, t, cond)
        assert torch.allclose(student.x0(z, t, cond, torch.tensor([6.0])), want, atol=1e-5)
        for name, p in student.denoiser.named_parameters():
            if "guidance_embedder.linear_2" in name:
                p.normal_()
        assert not torch.allclose(student.x0(z, t, cond, torch.tensor([6.0])), want, atol=1e-3)


def test_flux_student_saves_and_loads_with_its_guidance_input(tiny_pipeline, tmp_path):
    student = _load(tiny_pipeline, "flux").with_guidance_input()
    student.save(tmp_path / "s", dtype=torch.float32)
    back = registry.load(str(tmp_path / "s"), device="cpu")
    assert back.name == "flux" and back.guidance_embedded and back.default_size == student.default_size
    assert json.loads((tmp_path / "s" / "lab.json").read_text())["family"] == "flux"


def test_sizes_must_be_multiples_of_vae_factor_times_patch(tiny_pipeline):
    fam = _load(tiny_pipeline, "flux2-klein")
    fam.check_size(64, 96)
    with pytest.raises(UsageError, match="multiples of 16"):
        fam.check_size(64, 72)


@pytest.mark.parametrize("kind,nfe", [("flux", 6), ("flux-dev", 3)])
def test_cli_generates_from_a_flux_directory(tiny_pipeline, tmp_path, capsys, kind, nfe):
    out = tmp_path / "img.png"
    code = main(["generate", "--model", str(tiny_pipeline(kind)), "--prompt", "a red cube", "--steps", "3",
                 "--guidance", "4", "--height", "64", "--width", "64", "--out", str(out),
                 "--data-dir", str(tmp_path / "data"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["nfe"] == nfe
    assert Image.open(out).size == (64, 64)


def test_cli_generates_from_a_flux2_klein_directory_as_a_user_would(tiny_pipeline, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "img.png"
    model = tiny_pipeline("flux2-klein")
    capfd.readouterr()  # what making the tiny pipeline printed (only when this worker makes it first)
    assert main(["generate", "--model", str(model), "--prompt", "a red cube", "--steps", "3",
                 "--guidance", "4", "--height", "64", "--width", "64", "--out", str(out)]) == 0
    stdout, stderr = capfd.readouterr()
    rec = json.loads(stdout.strip().splitlines()[-1])
    assert rec["nfe"] == 6 and (rec["height"], rec["width"]) == (64, 64)
    assert Image.open(out).size == (64, 64)
    assert "Loading" not in stderr and "%|" not in stderr  # no library progress bars
