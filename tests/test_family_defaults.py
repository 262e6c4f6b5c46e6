"""Each family's default steps and guidance (engine/families/*.py) are what its diffusers pipeline
does by default, read from the installed pipeline's `__call__` signature so they cannot drift from
diffusers; `generate` uses them (or a student's recommended setting) when none are asked for."""

import inspect
import json

import pytest
import torch

from engine import registry
from engine.cli import main
from engine.families import synthetic
from engine.families.flux2 import Flux2Family
from engine.generate import defaults
from engine.sampling import Guided
from engine.store import Store


def call_defaults(pipe) -> dict:
    return {k: p.default for k, p in inspect.signature(type(pipe).__call__).parameters.items()}


def pipeline_passes(pipe) -> int:
    """Denoiser passes a step the pipeline runs at its default guidance."""
    d = call_defaults(pipe)
    if "true_cfg_scale" in d:  # FluxPipeline: true CFG only above true_cfg_scale 1
        return 2 if d["true_cfg_scale"] > 1 else 1
    pipe._guidance_scale = d["guidance_scale"]  # what __call__ sets before it asks
    return 2 if pipe.do_classifier_free_guidance else 1


def lab_passes(fam) -> int:
    """Denoiser passes a step the lab runs at the family's default guidance."""
    return Guided.build(fam, ["a red cube"], fam.default_guidance).passes


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_defaults_are_the_pipelines_own(tiny_pipeline, kind):
    fam = registry.load(str(tiny_pipeline(kind)), device="cpu")
    d = call_defaults(fam.pipe)
    assert fam.default_steps == d["num_inference_steps"]
    if kind == "flux":  # schnell-style: no guidance input, so the pipeline's scale is true_cfg_scale
        assert not fam.guidance_embedded and fam.default_guidance == d["true_cfg_scale"] == 1
    else:
        assert fam.default_guidance == d["guidance_scale"] > 1
    assert lab_passes(fam) == pipeline_passes(fam.pipe)


def test_a_step_distilled_klein_defaults_to_one_pass():
    pipe = synthetic.build("flux2-klein")
    pipe.register_to_config(is_distilled=True)
    fam = Flux2Family(pipe)
    assert fam.default_steps == call_defaults(pipe)["num_inference_steps"]
    assert fam.default_guidance == 1 and lab_passes(fam) == pipeline_passes(pipe) == 1


def test_the_embedded_family_keeps_50_steps_at_guidance_5(tiny_family):
    assert (tiny_family.default_steps, tiny_family.default_guidance) == (50, 5.0)
    assert defaults(tiny_family) == (50, 5.0)


def test_a_student_keeps_its_recommended_setting(tiny_family, tmp_path):
    tiny_family.save(tmp_path / "s", dtype=torch.float32, extra={"recommended": {"steps": 4, "guidance": 3.0}})
    assert defaults(registry.load(str(tmp_path / "s"), device="cpu")) == (4, 3.0)
    # a student without a guidance input recommends no scale: the family's
    tiny_family.save(tmp_path / "t", dtype=torch.float32, extra={"recommended": {"steps": 2, "guidance": None}})
    assert defaults(registry.load(str(tmp_path / "t"), device="cpu")) == (2, 5.0)


def _generate(model, tmp_path, capsys, *flags, size: int = 64) -> dict:
    code = main(["generate", "--model", str(model), "--prompt", "a red cube", "--height", str(size),
                 "--width", str(size), "--out", str(tmp_path / "img.png"), "--data-dir", str(tmp_path / "data"),
                 "--device", "cpu", *flags])
    assert code == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_schnell_style_flux_generates_one_pass_a_step_by_default(tiny_pipeline, tmp_path, capsys):
    rec = _generate(tiny_pipeline("flux"), tmp_path, capsys)
    assert (rec["steps"], rec["guidance"], rec["nfe"]) == (28, 1.0, 28)
    row = Store(tmp_path / "data").generations(1)[0]
    assert (row["steps"], row["guidance"]) == (28, 1.0)  # the store records what ran, too


def test_explicit_steps_and_guidance_win(tiny_pipeline, tmp_path, capsys):
    rec = _generate(tiny_pipeline("flux"), tmp_path, capsys, "--guidance", "3")
    assert (rec["steps"], rec["guidance"], rec["nfe"]) == (28, 3.0, 56)  # true CFG: two passes a step
    rec = _generate(tiny_pipeline("flux"), tmp_path, capsys, "--steps", "3")
    assert (rec["steps"], rec["guidance"], rec["nfe"]) == (3, 1.0, 3)


def test_generate_defaults_to_a_students_recommended_setting(tiny_family, tmp_path, capsys):
    tiny_family.save(tmp_path / "s", dtype=torch.float32, extra={"recommended": {"steps": 3, "guidance": 2.0}})
    rec = _generate(tmp_path / "s", tmp_path, capsys, size=32)
    assert (rec["steps"], rec["guidance"], rec["nfe"]) == (3, 2.0, 6)
