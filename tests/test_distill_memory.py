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
    own = [t for t in (*student.denoiser.parameters(), *memory.persistent_buffers(student.denoiser))
           if t.data_ptr() not in teacher_tensors]  # a LoRA student's base is the teacher's
    return {"teacher": tensor_bytes(teacher_tensors.values()), "student": tensor_bytes(own),
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
    """FLUX.1-dev (11.9B): a full-parameter guidance job does not fit one 80 GB GPU, and the plan
    names a change that does (scripts/memory_plans.py prints the table of docs/distillation.md)."""
    from accelerate import init_empty_weights

    with init_empty_weights(), catalog.quiet():
        pipe = synthetic.build("flux-dev", real=True, device="meta")
    others = sum(memory.module_bytes(m, 2) for name, m in pipe.components.items()
                 if isinstance(m, torch.nn.Module) and name != "transformer")

    def planner(recipe):
        return memory.plan_round(recipe, pipe.transformer, others, "flux", "guidance", 1024, 8)

    recipe = Recipe(technique="guidance", teacher="flux-dev", name="s", batch_size=1, mixed_precision="bf16")
    full = planner(recipe)
    assert full.total > 0.9 * 80e9 and full.trainable > 11e9
    fix = memory.suggestion(recipe, planner, 80 * 10**9)
    assert fix and fix.startswith("it fits with --lora-rank 64"), fix
    # The last resort: what trains, sharded. Over 8 GPUs a full FLUX.1-dev student holds 1/8 of its
    # 48 GB of weights, gradients, EMA and AdamW's 95 GB on each, beside the whole bf16 teacher.
    each = memory.sharded(full, 8)
    assert each.parts["optimizer"] == full.parts["optimizer"] // 8 and each.parts["teacher"] == full.parts["teacher"]
    assert each.total < 141e9 * memory.HEADROOM


def test_a_lora_student_holds_one_copy_of_the_base(tiny_pipeline):
    """Tiny SDXL, LoRA guidance round: the parameters in memory (teacher and student, each tensor
    once) against a student that copies its base, as jobs did before; the teacher stays untouched
    by the student's adapter, its training and its merge."""
    from engine.families.adapter import merge_lora
    from engine.sampling import sample

    path = str(tiny_pipeline("sdxl"))
    recipe = Recipe(technique="guidance", teacher=path, name="s", lora=LoraSpec(rank=8))
    teacher = registry.load(path, device="cpu", dtype="float32")
    modules = [m for m in teacher.pipe.components.values() if isinstance(m, torch.nn.Module)]
    before_image, _ = sample(teacher, ["a fox"], steps=2, guidance=3.0, seeds=[0], height=64, width=64)

    def held(student) -> int:
        return tensor_bytes(t for m in (*modules, student.denoiser) for t in m.parameters())

    shared, new = build_student(Plan(0, "guidance", "s"), teacher, recipe)
    params = make_trainable(shared, recipe, new)
    copied = teacher.with_guidance_input()
    make_trainable(copied, recipe, new)
    ratio = held(shared) / held(copied)
    assert ratio < 0.6, ratio
    print(f"parameter memory of the LoRA guidance job: {ratio:.3f}x the copied base")
    with torch.no_grad():  # train: the adapter and the guidance input move
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)
    merge_lora(shared)
    after_image, _ = sample(teacher, ["a fox"], steps=2, guidance=3.0, seeds=[0], height=64, width=64)
    assert torch.equal(before_image, after_image)
    student_image, _ = sample(shared, ["a fox"], steps=2, guidance=3.0, seeds=[0], height=64, width=64)
    assert not torch.equal(student_image, after_image)


def test_a_bf16_job_holds_its_frozen_teacher_in_bf16_and_trains_in_float32(tiny_pipeline, tmp_path):
    """Mixed precision bf16 (here on the CPU, as accelerate allows), a job of its own: a LoRA
    guidance round with gradient checkpointing trains float32 adapters over the bf16 teacher's own
    weights, its losses finite, its student saved, and its samples drawn under bf16 too."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na lighthouse at dusk\n")
    done = run_cli("distill", "guidance", "--teacher", str(tiny_pipeline("sd")), "--name", "bf", "--train-steps", "2",
                   "--warmup", "0", "--batch-size", "2", "--teacher-steps", "4", "--eval-n", "0", "--ema", "0",
                   "--mixed-precision", "bf16", "--lora-rank", "4", "--gradient-checkpointing",
                   "--prompts", str(prompts), data_dir=tmp_path / "lab")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1])["models"] == ["bf"]
    store = Store(tmp_path / "lab")
    losses = [m["loss"] for m in store.job_metrics(store.jobs()[0]["id"])]
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses)
    assert registry.load("bf", store=store, device="cpu").guidance_embedded
    from engine import jobs

    job_id = store.jobs()[0]["id"]
    assert (jobs.job_dir(store, job_id) / "samples" / "round1-step0000002.png").exists()
    assert "skipped" not in jobs.log_path(store, job_id).read_text()


def test_plans_made_at_once_leave_attention_as_it_was(tiny_pipeline):
    """The app plans in its worker threads, several at once: attention is torch's own afterwards,
    and real tensors get it meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    import torch.nn.functional as F

    before = F.scaled_dot_product_attention
    path = tiny_pipeline("sd")
    recipe = Recipe(technique="guidance", teacher=str(path), name="s", batch_size=2, mixed_precision="no")
    q = torch.randn(1, 2, 8, 4)
    expected = before(q, q, q)
    with ThreadPoolExecutor(3) as pool:
        plans = [pool.submit(memory.plan, recipe, path, "sd", device_bytes=2**40) for _ in range(3)]
        during = [pool.submit(lambda: F.scaled_dot_product_attention(q, q, q)) for _ in range(3)]
        totals = {p.result().total for p in plans}
        assert all(torch.allclose(d.result(), expected) for d in during)
    assert len(totals) == 1
    assert F.scaled_dot_product_attention is before


def test_a_teacher_the_planner_cannot_trace_is_not_refused(tiny_pipeline, tmp_path, monkeypatch):
    """A denoiser whose forward the meta device cannot run is planned no further: the job is queued
    with a warning saying so, not refused."""
    def fails(*args, **kwargs):
        raise RuntimeError("meta tensors cannot do that")

    monkeypatch.setattr(memory, "saved_bytes", fails)
    store = Store(tmp_path / "lab")
    recipe = Recipe(technique="guidance", teacher=str(tiny_pipeline("sd")), name="s", batch_size=2)
    warnings = distill_job.validate(recipe, store)
    assert any(w.startswith("warning: no memory plan for this teacher (RuntimeError") for w in warnings)
