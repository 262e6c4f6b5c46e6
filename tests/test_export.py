"""Students leave the lab: `export` writes a diffusers pipeline (or a diffusers-format LoRA) whose
model card's own code, run in a process that never imports the lab, makes the lab's image at the
same seed to within one grey level; LoRA adapters name their base absolutely, with a digest."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, run_cli

from engine import registry
from engine.distill.lora import apply_lora, save_adapter_student
from engine.distill.recipes import LoraSpec
from engine.errors import UsageError
from engine.export.write import export
from engine.families import catalog, synthetic
from engine.sampling import sample
from engine.store import Store

PROMPT = "a prompt"  # what the model card's code asks for


def card_code(out) -> str:
    """The Python block of an export's model card, as a user would paste it."""
    return re.search(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S).group(1)


def run_outside(code: str, cwd) -> np.ndarray:
    """Run `code` (which leaves a PIL `image`) in a fresh interpreter where the lab is not importable;
    returns the image as uint8."""
    tail = ("\nimport sys, numpy\nassert not any(m == 'engine' or m.startswith('engine.') for m in sys.modules)\n"
            "numpy.save('image.npy', numpy.asarray(image))\n")
    done = subprocess.run([sys.executable, "-c", code + tail], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(cwd / "image.npy")


def lab_image(store, name: str) -> np.ndarray:
    family = registry.load(name, store=store, device="cpu", dtype="float32")
    meta = json.loads((registry.resolve(name, store) / "lab.json").read_text())
    rec = meta["recommended"]
    size = family.default_size
    images, _ = sample(family, [PROMPT], steps=rec["steps"], guidance=rec["guidance"], seeds=[0],
                       height=size, width=size)
    return images[0].numpy()


def register(store: Store, name: str, family, parent: str, kind: str, steps: int, guidance: float) -> None:
    """A student saved and registered as a distillation round saves and registers it."""
    path = store.new_dir("models")
    family.save(path, extra={"kind": kind, "parent": parent, "round": 0,
                             "recommended": {"steps": steps, "guidance": guidance}})
    store.register_model(name, path, family.name, parent=parent, round=0)


def perturb(net: torch.nn.Module, names: tuple[str, ...], std: float, seed: int = 1) -> None:
    """Stand-in for training: move the named weights (all where `names` is empty), so that what a
    student adds to its teacher matters to its images."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if not names or any(k in n for k in names):
                p.add_(torch.randn(p.shape, generator=gen) * std)


GUIDANCE_NEW = ("time_embedding.cond_proj", "guidance_embedder")
NAME = {"sd": "sd", "sdxl": "sdxl", "flux": "flux", "embedded": "tiny"}  # student names: not the shipped ones


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A data directory with students of tiny SD, SDXL and FLUX teachers and of a tiny embedded one."""
    root = tmp_path_factory.mktemp("export")
    store = Store(root / "lab")
    teachers = {}
    with catalog.quiet():
        for kind in ("sd", "sd-v", "sdxl", "flux", "flux-dev", "flux2-klein"):
            teachers[kind] = str(synthetic.save(kind, root / kind))
    from engine.families.embedded import EmbeddedConfig, EmbeddedFamily
    torch.manual_seed(0)
    EmbeddedFamily.new(EmbeddedConfig(**TINY)).save(root / "tiny-embedded", dtype=torch.float32)
    teachers["embedded"] = str(root / "tiny-embedded")
    load = {k: registry.load(v, device="cpu", dtype="float32") for k, v in teachers.items()}
    for kind in ("sd", "sdxl", "flux", "embedded"):  # guidance students (one pass at any scale)
        student = load[kind].with_guidance_input()
        perturb(student.denoiser, GUIDANCE_NEW, 0.5)
        register(store, f"{NAME[kind]}-guidance", student, teachers[kind], "guidance", 3, 4.0)
    # step students: v-prediction teacher (its DDIM must not travel with it), eps -> v, a flow model
    register(store, "sd-v-2step", _moved(load["sd-v"].clone()), teachers["sd-v"], "progressive", 2, 4.0)
    register(store, "sd-2step", _moved(load["sd"].with_parameterization("v_prediction")), teachers["sd"],
             "progressive", 2, 4.0)
    register(store, "sdxl-2step", _moved(load["sdxl"].with_parameterization("v_prediction")), teachers["sdxl"],
             "progressive", 2, 4.0)
    klein = load["flux2-klein"].with_guidance_input()
    register(store, "klein-guidance", klein, teachers["flux2-klein"], "guidance", 2, 4.0)
    register(store, "flux-2step", _moved(load["flux"].clone()), teachers["flux"], "progressive", 2, 4.0)  # true CFG
    register(store, "flux-dev-2step", _moved(load["flux-dev"].clone()), teachers["flux-dev"], "progressive", 2, 3.5)
    lora_students = (("sd", False), ("sd", True), ("sdxl", False), ("embedded", True), ("flux", False))
    for kind, guided in lora_students:  # LoRA adapter students, saved as adapters over their teacher
        teacher = load[kind]
        student = teacher.with_guidance_input() if guided else teacher.clone()
        before = {n for n, _ in teacher.denoiser.named_parameters()}
        new = [n for n, _ in student.denoiser.named_parameters() if n not in before]
        apply_lora(student, LoraSpec(rank=4), new)
        perturb(student.denoiser, ("lora_", *GUIDANCE_NEW), 0.1)
        name = f"{NAME[kind]}-lora{'-guidance' if guided else ''}"
        path = store.new_dir("models")
        save_adapter_student(student, path, registry.resolve(teachers[kind]), new,
                             {"kind": "guidance" if guided else "progressive", "parent": teachers[kind], "round": 0,
                              "recommended": {"steps": 2, "guidance": 4.0 if guided or kind != "flux" else 1.0}})
        store.register_model(name, path, student.name, parent=teachers[kind], round=0)
    return store, root


def _moved(student):
    perturb(student.denoiser, (), 0.02, seed=2)
    return student


DIFFUSERS_CASES = ["sd-guidance", "sdxl-guidance", "flux-guidance", "tiny-guidance", "sd-v-2step", "sd-2step",
                   "sdxl-2step", "flux-2step", "flux-dev-2step", "sd-lora", "sdxl-lora", "flux-lora",
                   "tiny-lora-guidance"]


@pytest.mark.parametrize("name", DIFFUSERS_CASES)
def test_a_diffusers_export_makes_the_labs_image(lab, name, tmp_path):
    store, _ = lab
    out = tmp_path / "out"
    result = export(store, name, out)
    assert (out / "model_index.json").exists() and result["load"] in (out / "README.md").read_text()
    diffusers_image = run_outside(card_code(out), tmp_path)
    ours = lab_image(store, name)
    assert diffusers_image.shape == ours.shape
    assert np.abs(diffusers_image.astype(int) - ours.astype(int)).max() <= 1


def test_the_shipped_students_export_as_diffusers_pipelines(tmp_path):
    """embedded-guidance and embedded-4step read the scale through the lab's earlier embedding
    (lab-v1): the exported pipeline knows it."""
    for name in ("embedded-guidance", "embedded-4step"):
        out = tmp_path / name
        export(None, name, out)
        assert json.loads((out / "model_index.json").read_text())["guidance_embedding"] == "lab-v1"
        code = card_code(out).replace("num_inference_steps=50", "num_inference_steps=4")
        theirs = run_outside(code, tmp_path)
        family = registry.load(name, device="cpu", dtype="float32")
        rec = json.loads((registry.resolve(name) / "lab.json").read_text())["recommended"]
        ours, _ = sample(family, [PROMPT], steps=4, guidance=rec["guidance"] or 5.0, seeds=[0], height=32, width=32)
        assert np.abs(theirs.astype(int) - ours[0].numpy().astype(int)).max() <= 1


@pytest.mark.parametrize("name", ["sd-lora", "sd-lora-guidance", "sdxl-lora", "tiny-lora-guidance", "flux-lora"])
def test_a_lora_export_loads_with_load_lora_weights(lab, name, tmp_path):
    store, _ = lab
    out = tmp_path / "lora"
    export(store, name, out, "lora")
    keys = list(__import__("safetensors").safe_open(out / "pytorch_lora_weights.safetensors", "pt").keys())
    prefix = "transformer." if name.startswith("flux") else "unet."
    assert keys and all(k.startswith(prefix) for k in keys)
    code = card_code(out)
    component = prefix[:-1]
    counted = code + (f"\nlayers = sum(n.endswith('lora_A.default_0') for n, _ in pipe.{component}.named_modules())"
                      f"\nassert layers == {len(keys) // 2}, layers\n")
    theirs = run_outside(counted, tmp_path)
    assert np.abs(theirs.astype(int) - lab_image(store, name).astype(int)).max() <= 1


def test_what_export_refuses(lab, tmp_path):
    store, _ = lab
    with pytest.raises(UsageError, match="is not a LoRA adapter student"):
        export(store, "sd-guidance", tmp_path / "a", "lora")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with pytest.raises(UsageError, match="exists and is not an empty folder"):
        export(store, "sd-guidance", tmp_path / "taken")
    with pytest.raises(UsageError, match="Flux2KleinPipeline never passes a guidance input"):
        export(store, "klein-guidance", tmp_path / "c")
    with pytest.raises(UsageError, match="--format must be one of diffusers, lora"):
        export(store, "sd-guidance", tmp_path / "b", "onnx")
    assert not any((tmp_path / d).exists() for d in "abc")
    assert not list(tmp_path.glob(".*.partial"))


def test_an_adapter_names_its_base_absolutely_and_refuses_a_changed_one(lab, tmp_path):
    store, root = lab
    meta = json.loads((registry.resolve("sd-lora", store) / "lab.json").read_text())
    assert meta["base"] == str((root / "sd").resolve()) and len(meta["base_sha256"]) == 64
    # a copy of the adapter elsewhere still finds its base
    import shutil
    moved = tmp_path / "moved"
    shutil.copytree(registry.resolve("sd-lora", store), moved)
    registry.load(str(moved), device="cpu")
    # a base whose weights changed is refused, naming what changed
    base = tmp_path / "base"
    shutil.copytree(root / "sd", base)
    changed = tmp_path / "changed"
    shutil.copytree(moved, changed)
    (changed / "lab.json").write_text(json.dumps({**meta, "base": str(base)}))
    registry.load(str(changed), device="cpu")  # an identical copy is the same base
    weights = next((base / "unet").glob("*.safetensors"))
    from safetensors.torch import load_file, save_file
    state = load_file(weights)
    k = next(iter(state))
    state[k] = state[k] + 1
    save_file(state, weights)
    registry._load.cache_clear()  # the loaded copy is cached by path
    with pytest.raises(UsageError, match="changed since the adapter was trained"):
        registry.load(str(changed), device="cpu")


def test_a_foreign_lcm_unet_runs_in_the_lab_as_in_its_pipeline(tmp_path):
    """A UNet with `time_cond_proj_dim` that the lab never made (no lab.json) is fed LCM's guidance
    embedding, as StableDiffusionPipeline feeds it: parity within a grey level."""
    from engine.parity import compare

    with catalog.quiet():
        teacher = registry.load(str(synthetic.save("sd", tmp_path / "sd")), device="cpu")
    student = teacher.with_guidance_input()
    perturb(student.denoiser, GUIDANCE_NEW, 0.5)
    student.pipeline().save_pretrained(tmp_path / "lcm-like")  # diffusers' own save: no lab.json
    assert not (tmp_path / "lcm-like" / "lab.json").exists()
    family = registry.load(str(tmp_path / "lcm-like"), device="cpu")
    assert family.guidance_embedded and family.guidance_embedding == "lcm"
    result = compare(family, PROMPT, steps=3, guidance=6.0, seed=0, height=64, width=64)
    assert result["max_image_diff"] <= 1


def test_models_lists_every_model_with_path_lineage_and_size(lab, tmp_path):
    store, _ = lab
    listed = run_cli("models", "--json", data_dir=store.root)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert {"embedded", "embedded-4step", "sd-guidance", "sd-lora"} <= set(rows)
    assert rows["sd-lora"]["base"] and rows["sd-lora"]["bytes"] > 0
    assert rows["embedded-4step"]["lineage"] == ["embedded", "embedded-guidance", "embedded-4step"]
    table = run_cli("models", data_dir=store.root)
    assert "sd-guidance" in table.stdout and str(registry.resolve("sd-guidance", store)) in table.stdout


def test_the_export_command(lab, tmp_path):
    store, _ = lab
    done = run_cli("export", "sd-2step", "--out", str(tmp_path / "e"), data_dir=store.root)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["out"] == str(tmp_path / "e")
    refused = run_cli("export", "sd-2step", "--out", str(tmp_path / "e"), data_dir=store.root)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--out" in refused.stderr
    missing = run_cli("export", "no-such-model", "--out", str(tmp_path / "f"), data_dir=store.root)
    assert missing.returncode == 2 and "no model named" in missing.stderr


def test_the_readme_section_runs(tmp_path):
    """README's "Use your student in diffusers": the export command, then the Python, as written."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use your student in diffusers", 1)[1].split("\n## ", 1)[0]
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    argv = shell.split("#")[0].split()
    assert argv[:3] == ["python", "-m", "engine"]
    done = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
                               "LAB_DATA_DIR": str(tmp_path / "lab")})
    assert done.returncode == 0, done.stderr
    image = run_outside(code, tmp_path)
    assert image.shape == (32, 32, 3)


def test_the_model_card_carries_what_the_lab_measured(lab, tmp_path):
    store, _ = lab
    store.add_bench_run("sd", "cpu (2 cores)", {}, [
        {"key": "step4", "row": "step-distilled", "model": "sd-2step", "steps": 2, "guidance": 4.0, "nfe": 4,
         "seconds": 0.0123, "speedup": 12.5, "adherence": None},
        {"key": "step4+fp8w", "row": "+ FP8", "model": "sd-2step", "steps": 2, "guidance": 4.0, "nfe": 4,
         "seconds": 0.02, "speedup": 7.0}])
    export(store, "sd-2step", tmp_path / "card")
    card = (tmp_path / "card" / "README.md").read_text()
    assert "## Measured in the lab" in card
    assert "speed-up over sd (4 passes, 0.0123 s an image, cpu (2 cores)) | 2 | 4 | 12.5x" in card
    assert "7x" not in card  # a row with a speed option on top is not this model as exported
    assert "sd-2step" in card.split("## Lineage")[1]
