"""The full recipe (guidance, then a step round) on tiny random pipelines of every real family,
through the same trainer and targets as the embedded model: each round registers a student that
loads back by name and samples in one pass a step; an SD student predicts v."""

import pytest
import torch

from engine import registry
from engine.distill.recipes import Recipe
from engine.distill.run import Callbacks, run_recipe
from engine.families import catalog, synthetic
from engine.sampling import sample
from engine.store import Store


@pytest.mark.parametrize("kind", ["sd", "sdxl", "flux", "flux2-klein", "sd3"])
def test_guidance_then_steps_on_every_family(kind, tmp_path):
    """SD3's transformer has no guidance input, so its recipe is steps only (on two-pass CFG). The
    teachers are what `random-model` saves: tiny random pipelines that work at 64 pixels."""
    with catalog.quiet():
        teacher = str(synthetic.save(kind, tmp_path / kind))
    both = kind != "sd3"
    torch.manual_seed(0)
    store = Store(tmp_path / "lab")
    losses = []
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox in the snow\na lighthouse at dusk\na bowl of ramen, top view\n")
    recipe = Recipe(technique="guidance+progressive" if both else "progressive", teacher=teacher,
                    name=f"{kind}-both",
                    train_steps=2, warmup=0, batch_size=2, from_steps=4, to_steps=2, teacher_steps=4, eval_n=0,
                    checkpoint_every=1000, ema=None, prompts=str(prompts))
    recipe.check()
    names = run_recipe(recipe, store, tmp_path / "work",
                       Callbacks(report=lambda r: losses.append(r.get("loss")), log=lambda m: None))
    assert names == ([f"{kind}-both-guidance"] if both else []) + [f"{kind}-both"]
    assert losses and all(loss is None or torch.isfinite(torch.tensor(loss)) for loss in losses)
    assert registry.lineage(store, f"{kind}-both") == [teacher, *names]
    first = registry.load(names[0], store=store, device="cpu")
    student = registry.load(names[-1], store=store, device="cpu")
    assert first.guidance_embedded == student.guidance_embedded == both
    if kind in ("sd", "sdxl"):  # DESIGN §5: the step student of an eps UNet predicts v
        assert first.prediction_type == "epsilon" and student.prediction_type == "v_prediction"
    size = student.default_size
    images, m = sample(student, ["a red fox"], steps=2, guidance=4.0, seeds=[0], height=size, width=size)
    assert m.nfe == (2 if both else 4) and images.shape[0] == 1 and images.dtype == torch.uint8


def test_guidance_distillation_of_sd3_is_refused_before_any_job(tiny_pipeline, tmp_path):
    from engine.distill import job as distill_job
    from engine.errors import UsageError

    store = Store(tmp_path / "lab")
    with pytest.raises(UsageError, match="technique: guidance distillation needs"):
        distill_job.submit(store, Recipe(technique="guidance", teacher=str(tiny_pipeline("sd3")), name="g"))
    assert store.jobs() == []
