"""The memory plan of a distillation job (engine/distill/memory.py): its parameter, gradient,
optimiser and EMA bytes equal the tensors the job really allocates, on the tiny pipelines of every
family, full and LoRA; gradient checkpointing lowers its activations; a job that cannot fit is
refused before it is queued, with a change that makes it fit; real shapes plan on the meta device."""

import json

import pytest
import torch
from conftest import run_cli
from diffusers.training_utils import EMAModel

from engine import registry
from engine.distill import job as distill_job
from engine.distill import memory
from engine.distill.recipes import LoraSpec, Recipe
from engine.distill.run import Plan, build_student, make_trainable
from engine.errors import UsageError
from engine.families import catalog, synthetic
from engine.store import Store


def tensor_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def allocated(teacher_path: str, recipe: Recipe, kind: str) -> dict:
    """What a round of the job really holds: built as run_recipe builds it, one AdamW step taken."""
    teacher = registry.load(teacher_path, device="cpu", dtype="float32")
    teacher.denoiser.requires_grad_(False)
    student, new = build_student(Plan(0, kind, "s", 4, 2), teacher, recipe)
    params = make_trainable(student, recipe, new)
    modules = [teacher.denoiser] + ([teacher.text_encoder] if teacher.name == "embedded" else
                                    [m for m in teacher.pipe.components.values() if isinstance(m, torch.nn.Module)])
    teacher_tensors = {t.data_ptr(): t for m in modules for t in (*m.parameters(), *memory.persistent_buffers(m))}
    for p in params:
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(params, lr=1e-4)
    opt.step()
    ema = EMAModel(params, decay=0.9)
    return {"teacher": tensor_bytes(teacher_tensors.values()),
            "student": tensor_bytes((*student.denoiser.parameters(), *memory.persistent_buffers(student.denoiser))),
            "gradients": tensor_bytes(p.grad for p in params),
            "optimizer": tensor_bytes(v for s in opt.state.values() for k, v in s.items() if k != "step"),
            "ema": tensor_bytes(ema.shadow_params)}


CASES = [(kind, technique, lora) for kind in ("sd", "sdxl", "flux", "flux2-klein", "embedded")
         for technique in ("guidance", "progressive") for lora in (False, True)] + \
        [("sd3", "progressive", False), ("sd3", "progressive", True)]


@pytest.mark.parametrize("kind,technique,lora", CASES)
def test_the_plan_counts_what_the_job_allocates(kind, technique, lora, tiny_pipeline, tiny_model_dir):
    path = tiny_model_dir if kind == "embedded" else tiny_pipeline(kind)
    family = registry.check_complete(path)
    recipe = Recipe(technique=technique, teacher=str(path), name="s", batch_size=2,
                    lora=LoraSpec(rank=4) if lora else None, ema=0.9, mixed_precision="no")
    plan = memory.plan(recipe, path, family, device_bytes=2**40)
    real = allocated(str(path), recipe, technique)
    assert {k: plan.parts[k] for k in real} == real
    assert plan.parts["activations"] > 0 and plan.fits


def test_gradient_checkpointing_plans_fewer_activations(tiny_pipeline):
    path = tiny_pipeline("sdxl")
    recipe = Recipe(technique="guidance", teacher=str(path), name="s", batch_size=4, mixed_precision="no")
    plain = memory.plan(recipe, path, "sdxl", device_bytes=2**40)
    ckpt = memory.plan(Recipe(**{**recipe.to_json(), "gradient_checkpointing": True}), path, "sdxl",
                       device_bytes=2**40)
    assert ckpt.parts["activations"] < plain.parts["activations"]
    assert ckpt.parts["activations"] == plain.activations_checkpointed
    # activations grow with the batch
    double = memory.plan(Recipe(**{**recipe.to_json(), "batch_size": 8}), path, "sdxl", device_bytes=2**40)
    assert double.parts["activations"] > 1.8 * plain.parts["activations"]


def test_a_job_that_cannot_fit_is_refused_before_it_is_queued(tiny_pipeline, tmp_path):
    path = tiny_pipeline("sd")
    store = Store(tmp_path / "lab")
    recipe = Recipe(technique="guidance", teacher=str(path), name="s", batch_size=64, mixed_precision="no")
    need = memory.plan(recipe, path, "sd", device_bytes=2**40)
    tight = int(need.total / memory.HEADROOM * 0.8)  # too little for the recipe, enough for a smaller one
    with pytest.raises(UsageError, match=r"memory: this job needs .* it fits with --gradient-checkpointing"):
        distill_job.submit(store, recipe, device_bytes=tight)
    assert store.jobs() == []
    done = run_cli("distill", "guidance", "--teacher", str(path), "--name", "s", "--batch-size", "64",
                   "--mixed-precision", "no", "--device-memory", f"{tight / 2**30:.6f}", data_dir=tmp_path / "lab")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "it fits with" in done.stderr
    planned = run_cli("distill", "guidance", "--teacher", str(path), "--name", "s", "--plan", data_dir=tmp_path / "lab")
    assert planned.returncode == 0, planned.stderr
    assert set(json.loads(planned.stdout)["parts"]) == {"teacher", "student", "gradients", "optimizer", "ema",
                                                        "activations"}


def test_real_shapes_plan_on_the_meta_device():
    """FLUX.1-dev (11.9B): a full-parameter guidance job does not fit one 80 GB GPU; the plan says
    what does."""
    from accelerate import init_empty_weights

    with init_empty_weights(), catalog.quiet():
        pipe = synthetic.build("flux-dev", real=True, device="meta")
    others = sum(memory.module_bytes(m) for name, m in pipe.components.items()
                 if isinstance(m, torch.nn.Module) and name != "transformer")
    recipe = Recipe(technique="guidance", teacher="flux-dev", name="s", batch_size=1, mixed_precision="bf16")
    full = memory.plan_round(recipe, pipe.transformer, others, "flux", "guidance", 1024, 8)
    assert full.total > 0.9 * 80e9 and full.trainable > 11e9
    lora = memory.plan_round(Recipe(**{**recipe.to_json(), "lora": LoraSpec(rank=64), "gradient_checkpointing": True}),
                             pipe.transformer, others, "flux", "guidance", 1024, 8)
    assert lora.parts["optimizer"] < full.parts["optimizer"] / 50
