"""`python -m engine parity`: the lab against the model's own diffusers pipeline."""

import json

import pytest

from engine import registry
from engine.cli import main
from engine.errors import UsageError
from engine.parity import compare


@pytest.mark.parametrize("kind", ["sd-v", "flux-dev"])
def test_parity_command_reports_matching_results(tiny_pipeline, tmp_path, capsys, kind):
    code = main(["parity", "--model", str(tiny_pipeline(kind)), "--steps", "3", "--guidance", "4", "--seed", "9",
                 "--height", "64", "--width", "64", "--data-dir", str(tmp_path), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    r = json.loads(capsys.readouterr().out)
    assert r["max_latent_diff"] <= 1e-4 * max(r["latent_scale"], 1) and r["max_image_diff"] <= 1
    assert r["latent_scale"] > 0.5  # the latents are not trivially zero


def test_parity_refuses_what_diffusers_cannot_run(tiny_pipeline, tiny_family):
    student = registry.load(str(tiny_pipeline("sd")), device="cpu").with_guidance_input()
    student.guidance_embedding = "lab-v1"  # how students read the scale before they read it as LCM's
    with pytest.raises(UsageError, match="'lab-v1' embedding, which diffusers' pipelines do not feed"):
        compare(student, "a cat", steps=2, guidance=3.0, seed=0, height=64, width=64)
    klein = registry.load(str(tiny_pipeline("flux2-klein")), device="cpu").with_guidance_input()
    with pytest.raises(UsageError, match="Flux2KleinPipeline never passes a guidance input"):
        compare(klein, "a cat", steps=2, guidance=3.0, seed=0, height=64, width=64)
    with pytest.raises(UsageError, match="not a diffusers pipeline"):
        compare(tiny_family, "a cat", steps=2, guidance=3.0, seed=0, height=32, width=32)
