"""One GPU check for a session that is lent a GPU: what the lab cannot measure on a CPU, in one run.

1. the smoke test (scripts/gpu_smoke.py): FLUX.2-klein-4B, SDXL and FLUX.1-dev shapes at 1024²,
   4 and 50 steps: seconds per step, peak memory;
2. speed options on the klein shape (engine/generate.py, as `generate` runs them): none, TeaCache,
   TaylorSeer, FP8 weights and FP8 compute, each timed after a warm-up;
3. a LoRA (rank 64) guidance round on the klein shape at 512², the lab's own trainer and walkers,
   bf16, gradient checkpointing: steps per second and peak memory against the job's memory plan.

Random weights at real shapes (engine/families/synthetic.py): nothing is downloaded.

    python scripts/gpu_check.py                  # on a CUDA machine (about 5 minutes on an H100)
    python scripts/gpu_check.py --tiny           # tiny shapes, CPU, a few steps: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_smoke

from engine.distill import memory
from engine.distill.recipes import LoraSpec, Recipe
from engine.distill.run import Plan, build_student, make_trainable, round_step
from engine.distill.techniques import GuidanceRound
from engine.distill.trainer import LoopConfig, make_accelerator, train_loop
from engine.distill.walkers import Walkers
from engine.families import catalog, synthetic

PROMPTS = ["a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen, top view", "a city street in the rain"]


def say(row: dict) -> None:
    print(json.dumps(row), flush=True)


def klein(real: bool, device: str, dtype: torch.dtype):
    with catalog.quiet():
        pipe = synthetic.build("flux2-klein", real=real, device=device, dtype=dtype)
    return catalog.adapter("flux2")(pipe)


def speed_options(real: bool, device: str, dtype: torch.dtype, size: int, steps: int) -> list[dict]:
    """The klein shape under each speed option, as `generate` runs it: median of 3 timed runs."""
    from engine.errors import UsageError
    from engine.generate import run
    from engine.request import Request

    family = klein(real, device, dtype)
    rows = []
    options = [("none", "off"), ("teacache", "off"), ("taylorseer", "off"), ("none", "weights"), ("none", "compute")]
    for cache, fp8 in options:
        req = Request(prompt=PROMPTS[0], steps=steps, guidance=4.0, seed=0, height=size, width=size,
                      cache=cache, fp8=fp8)
        try:
            run(family, req, model_name="klein-check")  # warm-up (and a calibration, for TeaCache)
            records = [run(family, req, model_name="klein-check")[1] for _ in range(3)]
        except UsageError as e:
            rows.append({"check": "speed", "cache": cache, "fp8": fp8, "refused": str(e)})
            say(rows[-1])
            continue
        rows.append({"check": "speed", "cache": cache, "fp8": fp8, "nfe": records[0]["nfe"],
                     "seconds": round(statistics.median(r["seconds"] for r in records), 3),
                     "peak_mem_mb": records[0].get("peak_mem_mb"), "param_mem_mb": records[0].get("param_mem_mb")})
        say(rows[-1])
    return rows


def lora_round(real: bool, device: str, size: int, steps: int) -> dict:
    """A LoRA guidance round on the klein shape: steps per second and peak memory against the plan."""
    cuda = device == "cuda"
    recipe = Recipe(technique="guidance", teacher="flux2-klein", name="check", batch_size=1, lora=LoraSpec(rank=64),
                    mixed_precision="bf16" if cuda else "no", gradient_checkpointing=True, ema=None,
                    train_steps=steps, warmup=0, teacher_steps=8)
    acc = make_accelerator(recipe.mixed_precision)
    teacher = klein(real, device, memory.compute_dtype(recipe))
    teacher.denoiser.requires_grad_(False)
    frozen = memory.compute_dtype(recipe).itemsize
    others = sum(memory.module_bytes(m, frozen) for name, m in teacher.pipe.components.items()
                 if isinstance(m, torch.nn.Module) and name != "transformer")
    from accelerate import init_empty_weights
    with init_empty_weights(), catalog.quiet():
        meta = synthetic.build("flux2-klein", real=real, device="meta").transformer
    factor = teacher.vae_factor
    plan = memory.plan_round(recipe, meta, others, "flux2", "guidance", size, factor)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    student, new = build_student(Plan(0, "guidance", "check"), teacher, recipe)
    make_trainable(student, recipe, new)
    technique = GuidanceRound(teacher)
    walkers = Walkers(teacher, lambda rng, n: [rng.choice(PROMPTS) for _ in range(n)], batch=1, steps=8,
                      height=size, width=size, guidance_range=(1.0, 5.0), seed=0, jitter=technique.jitter)
    loss_fn = round_step(technique, student, walkers, 0.0)
    seconds = []

    def report(r):
        seconds.append(r["seconds"])
    start = time.perf_counter()
    train_loop(acc, student.denoiser, loss_fn, LoopConfig(steps=steps, lr=1e-4, warmup=0, log_every=1,
                                                          checkpoint_every=10**9),
               Path("/tmp/lab-gpu-check"), report=report)
    total = time.perf_counter() - start
    later = [b - a for a, b in zip(seconds[:-1], seconds[1:])][len(seconds) // 4:]  # past the first quarter
    row = {"check": "lora-round", "shape": "real" if real else "tiny", "size": size, "steps": steps,
           "steps_per_s": round(1 / statistics.median(later), 3) if later else None, "total_s": round(total, 1),
           "plan_gb": round(plan.total / 1e9, 2), "plan_activations_gb": round(plan.parts["activations"] / 1e9, 2),
           "device": torch.cuda.get_device_name() if cuda else "cpu"}
    if cuda:
        row["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        row["peak_over_plan"] = round(row["peak_gb"] / row["plan_gb"], 3)
    say(row)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU, a few steps: check that it runs")
    p.add_argument("--lora-steps", type=int, default=None, help="steps of the LoRA round (default 300; --tiny: 4)")
    args = p.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("error: no CUDA device; run with --tiny to check the script on the CPU", file=sys.stderr)
        return 2
    real, device = not args.tiny, "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    gpu_smoke.main(["--tiny"] if args.tiny else [])
    speed_options(real, device, dtype, size=64 if args.tiny else 1024, steps=4 if args.tiny else 28)
    lora_round(real, device, size=64 if args.tiny else 512, steps=args.lora_steps or (4 if args.tiny else 300))
    return 0


if __name__ == "__main__":
    sys.exit(main())
