"""`--model` for real checkpoints: diffusers directories (family from model_index.json), hub ids in
the local Hugging Face cache, and one-line errors for everything else."""

import json
import shutil

import huggingface_hub.constants
import pytest
from conftest import run_cli

from engine import registry
from engine.cli import main
from engine.errors import UsageError
from engine.families import catalog


def _index(tmp_path, index: dict):
    d = tmp_path / "model"
    d.mkdir()
    (d / "model_index.json").write_text(json.dumps(index))
    return d


@pytest.mark.parametrize("index,family", [
    ({"_class_name": "StableDiffusionPipeline"}, "sd"),
    ({"_class_name": "StableDiffusionXLPipeline"}, "sdxl"),
    ({"_class_name": "FluxPipeline"}, "flux"),
    ({"_class_name": "Flux2KleinPipeline"}, "flux2"),
    ({"_class_name": "StableDiffusion3Pipeline"}, "sd3"),
    # other pipeline classes over the same components: detected from the components
    ({"_class_name": "StableDiffusionImg2ImgPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
      "text_encoder": ["transformers", "CLIPTextModel"]}, "sd"),
    ({"_class_name": "StableDiffusionXLImg2ImgPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
      "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}, "sdxl"),
    ({"_class_name": "FluxImg2ImgPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}, "flux"),
])
def test_family_is_read_from_model_index(tmp_path, index, family):
    assert registry.family_of(_index(tmp_path, index)) == family


def test_unsupported_pipeline_lists_the_supported_ones(tmp_path):
    d = _index(tmp_path, {"_class_name": "KandinskyV22Pipeline", "unet": ["diffusers", "UNet2DModel"]})
    with pytest.raises(UsageError) as e:
        registry.family_of(d)
    msg = str(e.value)
    assert "KandinskyV22Pipeline" in msg and "StableDiffusionXLPipeline" in msg and "Flux2KleinPipeline" in msg
    # FLUX.2 dev (Mistral text encoder) is a different pipeline from klein
    d2 = tmp_path / "x"
    d2.mkdir()
    index = {"_class_name": "Flux2Pipeline", "transformer": ["diffusers", "Flux2Transformer2DModel"],
             "text_encoder": ["transformers", "Mistral3ForConditionalGeneration"]}
    (d2 / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UsageError, match="Flux2Pipeline"):
        registry.family_of(d2)


def test_unreadable_model_index_is_a_usage_error(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "model_index.json").write_text("{not json")
    with pytest.raises(UsageError, match="model_index.json"):
        registry.family_of(d)


def test_broken_directory_gives_one_line_and_exit_2(tiny_pipeline, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline("sd"), broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    r = run_cli("generate", "--model", str(broken), "--prompt", "a cat", "--height", "64", "--width", "64",
                "--out", str(tmp_path / "x.png"), data_dir=tmp_path / "data")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr  # one line: no library warnings or progress bars
    assert r.stderr.startswith("error: --model: unet/diffusion_pytorch_model.safetensors in")
    assert str(broken) in r.stderr and "is truncated (500 bytes" in r.stderr


def test_hub_id_not_in_the_cache_says_how_to_provide_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code = main(["generate", "--model", "black-forest-labs/FLUX.2-klein-base-4B", "--prompt", "a cat",
                 "--out", str(tmp_path / "x.png"), "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "hf download black-forest-labs/FLUX.2-klein-base-4B" in err and str(tmp_path / "hub") in err
    assert "local diffusers directory" in err


def test_hub_id_in_the_cache_loads_from_its_snapshot(tiny_pipeline, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-sd"
    shutil.copytree(tiny_pipeline("sd"), repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert registry.resolve("someone/tiny-sd") == repo / "snapshots" / ("a" * 40)
    fam = registry.load("someone/tiny-sd", device="cpu")
    assert fam.name == "sd"


def test_a_missing_plain_path_is_still_reported_as_missing():
    assert not catalog.looks_like_hub_id("./nowhere/model") and catalog.looks_like_hub_id("owner/name")
    with pytest.raises(UsageError, match="no model named or found"):
        registry.resolve("./nowhere/model")


def test_register_names_a_diffusers_directory_for_every_picker(tiny_pipeline, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["register", "--name", "my-sdxl", "--model", str(tiny_pipeline("sdxl")), "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "sdxl"
    from engine.store import Store
    store = Store(data)
    assert "my-sdxl" in registry.names(store)
    assert registry.load("my-sdxl", store=store, device="cpu").name == "sdxl"
    assert main(["register", "--name", "embedded", "--model", str(tiny_pipeline("sd")), "--data-dir", str(data)]) == 2
    assert main(["register", "--name", "x", "--model", str(tmp_path / "nothing"), "--data-dir", str(data)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 2 and "--name" in err[0] and "no model named or found" in err[1]
    # nothing registered but my-sdxl (and the shipped students, registered with their lineage)
    assert [r["name"] for r in store.models() if r["name"] not in registry.BUILTIN] == ["my-sdxl"]


def test_a_registered_diffusers_model_runs_in_the_compare_tab(tiny_pipeline, tmp_path):
    from app.compare import generate_pair
    from app.state import Lab
    from engine.store import Store

    lab = Lab(Store(tmp_path / "data"), device="cpu")
    registry.register(lab.store, "tiny-sd", str(tiny_pipeline("sd")))
    assert "tiny-sd" in lab.model_names()
    a, b, _, readout_a, readout_b, *_ = generate_pair(lab, "a red cube", 3, "tiny-sd", 2, 3.0, "tiny-sd", 2, 1.0,
                                                  progress=lambda *args, **kw: None)
    assert a.size[0] >= 64 and a.size == b.size
    assert "NFE **4**" in readout_a and "NFE **2**" in readout_b  # CFG on the left, none at guidance 1


def test_a_teacher_with_a_part_missing_or_cut_short_is_refused_at_submit_naming_the_part(tiny_pipeline, tmp_path,
                                                                                        capsys):
    from engine.store import Store

    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_pipeline("sd"), no_tokenizer)
    shutil.rmtree(no_tokenizer / "tokenizer")
    cut = tmp_path / "cut"
    shutil.copytree(tiny_pipeline("sd"), cut)
    weights = next((cut / "text_encoder").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    data = ["--data-dir", str(tmp_path / "data")]
    capsys.readouterr()  # what making the pipeline printed
    for model, says in ((no_tokenizer, "has no tokenizer/ folder, which model_index.json lists (CLIPTokenizer)"),
                        (cut, f"text_encoder/{weights.name} in {cut} is truncated")):
        for argv, field in ((["distill", "guidance", "--teacher", str(model), "--name", "s", "--detach"], "teacher"),
                            (["generate", "--model", str(model), "--prompt", "a cat", "--out",
                              str(tmp_path / "x.png")], "--model")):
            assert main([*argv, *data]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: {field}: ") and says in err and err.count("\n") == 1, err
    assert Store(tmp_path / "data").jobs() == [] and not (tmp_path / "x.png").exists()
