"""Short real training runs on a tiny model: the distillation loss falls, LoRA students round-trip."""

import random

import pytest
import torch

from engine.distill.lora import apply_lora, save_adapter_student
from engine.distill.recipes import LoraSpec
from engine.distill.run import round_step
from engine.distill.techniques import GuidanceRound, ProgressiveRound, round_loss, step_to_next
from engine.distill.trainer import LoopConfig, make_accelerator, train_loop
from engine.distill.walkers import Walkers
from engine.families.adapter import merge_lora
from engine.families.embedded import EmbeddedFamily


def walkers(family, steps, jitter, guidance=(2.0, 6.0), seed=0, batch=8, technique=None):
    w = Walkers(family, family.training_prompts, batch=batch, steps=steps, height=32, width=32,
                guidance_range=guidance, seed=seed, jitter=jitter)
    if technique is not None:
        w.warm_up(lambda b: technique.target(b)[1])
    return w


def loss(technique, student, b, target):
    return round_loss(student, b, technique.predict(student, b), target)


def fixed_loss(technique, student, batches):
    with torch.no_grad():
        return sum(loss(technique, student, b, technique.target(b)[0]).item() for b in batches) / len(batches)


def collect(technique, w, n):
    out = []
    for _ in range(n):
        b = w.current()
        out.append(b)
        w.advance(technique.target(b)[1])
    return out


@pytest.mark.parametrize("kind", ["guidance", "progressive"])
def test_short_training_run_lowers_the_loss(kind, tiny_family, tmp_path):
    """Targets, student, walkers and trainer wired together: training on teacher walker batches
    lowers the distillation loss on those batches."""
    torch.manual_seed(0)
    teacher = tiny_family
    teacher.denoiser.requires_grad_(False)
    if kind == "guidance":
        student, tech, steps, g = teacher.with_guidance_input(), GuidanceRound(teacher), 8, (2.0, 6.0)
    else:
        student, tech, steps, g = teacher.clone(), ProgressiveRound(teacher), 4, (1.0, 1.0)
    student.denoiser.requires_grad_(True).train()
    batches = collect(tech, walkers(teacher, steps, tech.jitter, guidance=g, technique=tech), 4)
    targets = [tech.target(b)[0] for b in batches]
    # The tiny random teacher's targets are close to what the student starts with; move the student
    # away first so there is a loss to lower.
    with torch.no_grad():
        for p in student.denoiser.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    before = fixed_loss(tech, student, batches)
    train_loop(make_accelerator("no"), student.denoiser,
               lambda step: loss(tech, student, batches[step % 4], targets[step % 4]),
               LoopConfig(steps=30, lr=1e-3, warmup=3, checkpoint_every=1000), tmp_path / "ckpt")
    after = fixed_loss(tech, student, batches)
    assert after < 0.7 * before, (before, after)


def test_guidance_student_starts_as_the_teachers_conditional_model(tiny_family):
    student = tiny_family.with_guidance_input()
    z, t = torch.randn(2, 3, 32, 32), torch.tensor([0.7, 0.3])
    cond = tiny_family.encode(["a red circle", "a face"])
    with torch.no_grad():
        a = tiny_family.x0(z, t, cond)
        b = student.x0(z, t, cond, torch.tensor([3.0, 9.0]))
    assert student.guidance_embedded and not tiny_family.guidance_embedded
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("on_policy", [0.0, 1.0])
def test_walkers_move_by_the_teacher_or_by_the_students_own_step(on_policy, tiny_family):
    """on_policy 0: every walker lands where the teacher's guided step takes it; 1: where the
    student's own step (its x0 prediction, one DDIM step t -> t_next) takes it."""
    teacher = tiny_family
    student = teacher.with_guidance_input()
    with torch.no_grad():  # a student that differs from the teacher
        for p in student.denoiser.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tech = GuidanceRound(teacher)
    w = walkers(teacher, 8, jitter=True, batch=4, technique=tech)
    w.start[:] = 0
    w.i[:] = 2  # no walker restarts on this step
    b = w.current()
    with torch.no_grad():
        teacher_next = tech.target(b)[1]
        own_next = step_to_next(teacher, b, student.x0(b.z, b.t, b.cond, b.s))
        round_step(tech, student, w, on_policy)(0)
    expected = own_next if on_policy else teacher_next
    other = teacher_next if on_policy else own_next
    assert torch.allclose(w.z, expected, atol=1e-5)
    assert not torch.allclose(w.z, other, atol=1e-3)
    assert (w.i == 3).all()


def test_walkers_follow_the_teacher_and_restart():
    fam = EmbeddedFamily.new()
    w = walkers(fam, 4, jitter=False, batch=3)
    assert w.base_grid.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    b = w.current()
    assert torch.all(b.t > b.t_next) and torch.allclose(b.t_mid, (b.t + b.t_next) / 2)
    for _ in range(4):
        w.advance(torch.zeros_like(w.z))
    assert torch.all(w.i < 4)  # every walker finished once and started again from noise
    assert w.z.abs().sum() > 0


def test_checkpoint_resume_continues_the_same_run(tiny_family, tmp_path):
    """Training 10 steps, or 6 then (after a 'crash') the remaining 4 from the checkpoint, ends
    at the same weights."""
    rng = random.Random(0)
    data = [torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(rng.randrange(1000)))
            for _ in range(10)]
    def make():
        torch.manual_seed(1)
        return torch.nn.Linear(8, 1)

    def loss_fn_for(m):
        return lambda step: (m(data[step].flatten(1)[:, :8]) ** 2).mean()

    full = make()
    train_loop(make_accelerator("no"), full, loss_fn_for(full),
               LoopConfig(steps=10, lr=1e-2, warmup=2, checkpoint_every=100), tmp_path / "a")
    part = make()
    cfg = LoopConfig(steps=10, lr=1e-2, warmup=2, checkpoint_every=6)

    class Crash(Exception):
        pass

    def crashing(step):
        if step == 7:
            raise Crash()
        return loss_fn_for(part)(step)

    with pytest.raises(Crash):
        train_loop(make_accelerator("no"), part, crashing, cfg, tmp_path / "b")
    resumed = make()  # a fresh process: weights come from the checkpoint
    train_loop(make_accelerator("no"), resumed, loss_fn_for(resumed), cfg, tmp_path / "b")
    assert torch.allclose(full.weight, resumed.weight, atol=1e-6)


def test_lora_adapter_loads_onto_the_teacher_and_matches_the_merged_student(tiny_model_dir, tmp_path):
    teacher = EmbeddedFamily.load(tiny_model_dir)
    student = teacher.with_guidance_input()
    new = ["time_embedding.cond_proj.weight"]
    params = apply_lora(student, LoraSpec(rank=4), new)
    n_lora = sum(p.numel() for n, p in student.denoiser.named_parameters() if "lora" in n)
    assert sum(p.numel() for p in params) == n_lora + student.denoiser.time_embedding.cond_proj.weight.numel()
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    save_adapter_student(student, tmp_path / "adapter", tiny_model_dir, new, {})
    merged = student
    merge_lora(merged)
    merged.save(tmp_path / "merged", dtype=torch.float32)
    z, t, s = torch.randn(1, 3, 32, 32), torch.tensor([0.6]), torch.tensor([4.0])
    cond = teacher.encode(["a striped star"])
    with torch.no_grad():
        a = EmbeddedFamily.load(tmp_path / "adapter").x0(z, t, cond, s)
        b = EmbeddedFamily.load(tmp_path / "merged").x0(z, t, cond, s)
        c = teacher.x0(z, t, cond)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)
    assert not any("lora" in n for n, _ in merged.denoiser.named_parameters())
