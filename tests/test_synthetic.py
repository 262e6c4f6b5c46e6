"""Random-weight pipelines: real shapes have the published sizes and run a pass at 1024 x 1024
(on the meta device: shapes only, no memory); the GPU smoke script and `random-model` run on the CPU."""

import json

import pytest
import torch

from engine import registry
from engine.cli import main
from engine.families import catalog, synthetic
from engine.families.base import Conditioning

# denoiser parameters of the published models (SDXL base UNet, FLUX.1-dev, FLUX.2-klein-4B transformers)
PUBLISHED = {"sdxl": 2.567e9, "flux-dev": 11.90e9, "flux2-klein": 3.876e9}


@pytest.mark.parametrize("kind", synthetic.REAL_KINDS)
def test_real_shapes_have_published_sizes_and_run_at_1024(kind):
    with catalog.quiet():
        pipe = synthetic.build(kind, real=True, device="meta", dtype=torch.bfloat16)
    fam = catalog.adapter(synthetic.FAMILY[kind])(pipe)
    n = sum(p.numel() for p in fam.denoiser.parameters())
    assert n == pytest.approx(PUBLISHED[kind], rel=2e-3)
    assert fam.default_size == 1024 and fam.vae_factor == 8
    z = torch.empty(fam.noise_shape(2, 1024, 1024), device="meta", dtype=torch.bfloat16)
    width = {"sdxl": 2048, "flux-dev": 4096, "flux2-klein": 3 * 2560}[kind]
    tensors = {"hidden": torch.empty(2, 77, width, device="meta", dtype=torch.bfloat16)}
    if kind != "flux2-klein":
        tensors["pooled"] = torch.empty(2, {"sdxl": 1280, "flux-dev": 768}[kind], device="meta", dtype=torch.bfloat16)
    g = torch.full((2,), 3.5, device="meta") if fam.guidance_embedded else None
    with torch.no_grad():
        out = fam.x0(z, torch.full((1,), 0.5, device="meta"), Conditioning(tensors), g)
    assert out.shape == z.shape


def test_gpu_smoke_script_runs_tiny_on_the_cpu(capsys):
    from gpu_smoke import main as smoke

    assert smoke(["--tiny", "--models", "flux2-klein", "--steps", "2", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(x["steps"], x["nfe"]) for x in rows] == [(2, 4), (3, 6)]  # klein base: CFG, two passes a step
    assert all(x["median_step_s"] > 0 and x["peak_mem_gb"] > 0 and x["device"] == "cpu" for x in rows)


def test_random_model_command_saves_a_loadable_directory(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["random-model", "--kind", "sdxl", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "sdxl"
    fam = registry.load(str(out), device="cpu")
    assert fam.name == "sdxl" and fam.default_size == 64
    assert main(["random-model", "--kind", "sdxl", "--out", str(out)]) == 2  # not over an existing model
    assert main(["random-model", "--kind", "kandinsky", "--out", str(tmp_path / "k")]) == 2
    assert "sd, sd-v, sdxl" in capsys.readouterr().err
