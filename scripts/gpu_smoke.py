"""GPU smoke test: real-shaped random-weight models through the lab's sampler, timed.

Builds FLUX.2-klein-4B-shaped, FLUX.1-dev-shaped and SDXL-shaped pipelines with random weights
(engine/families/synthetic.py; real weights are not reachable from our machines, and shapes are
what matter for speed), then runs a 4-step and a 50-step generation at 1024 x 1024 in bfloat16 and
prints, per model and step count: denoiser passes (NFE), median seconds per step, total seconds
and peak allocated CUDA memory. Text encoders are real width but small, so the memory figure is
the denoiser + VAE + sampling, not the full pipeline.

    python scripts/gpu_smoke.py                       # on a CUDA machine
    python scripts/gpu_smoke.py --tiny                # tiny shapes at 64 x 64 on the CPU: checks the script runs
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

from engine.families import catalog, synthetic
from engine.sampling import sample

GUIDANCE = {"sdxl": 5.0, "flux-dev": 3.5, "flux2-klein": 4.0}  # each model's usual scale (klein base: CFG)


def run(kind: str, *, real: bool, size: int, steps_list: list[int], device: str, dtype: torch.dtype) -> list[dict]:
    with catalog.quiet():
        pipe = synthetic.build(kind, real=real, device=device, dtype=dtype)
    family = catalog.adapter(synthetic.FAMILY[kind])(pipe)
    params = sum(p.numel() for p in family.denoiser.parameters())
    cuda = family.device.type == "cuda"
    sample(family, ["warm-up"], steps=1, guidance=GUIDANCE[kind], seeds=[0], height=size, width=size)
    rows = []
    for steps in steps_list:
        stamps = []

        def tick(i, n, stamps=stamps):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
        start = time.perf_counter()
        _, m = sample(family, ["a photo of a red fox in the snow"], steps=steps, guidance=GUIDANCE[kind],
                      seeds=[0], height=size, width=size, callback=tick)
        per_step = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
        rows.append({"model": kind, "shapes": "real" if real else "tiny", "denoiser_params_m": round(params / 1e6, 1),
                     "size": size, "steps": steps, "guidance": GUIDANCE[kind], "nfe": m.nfe,
                     "median_step_s": round(statistics.median(per_step[1:] or per_step), 4),
                     "total_s": round(m.seconds, 3), "peak_mem_gb": round(m.peak_mem_mb / 1024, 2),
                     "device": torch.cuda.get_device_name() if cuda else "cpu",
                     "dtype": str(dtype).replace("torch.", "")})
        print(json.dumps(rows[-1]), flush=True)
    del family, pipe
    if cuda:
        torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["flux2-klein", "sdxl", "flux-dev"], choices=synthetic.REAL_KINDS)
    p.add_argument("--steps", nargs="+", type=int, default=None, help="default: 4 50 (--tiny: 2 4)")
    p.add_argument("--size", type=int, default=None, help="image side (default 1024; --tiny: 64)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes, CPU, float32: check that the script works")
    args = p.parse_args(argv)
    if args.tiny:
        device, dtype, size, steps = "cpu", torch.float32, args.size or 64, args.steps or [2, 4]
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device; run with --tiny to check the script on the CPU", file=sys.stderr)
            return 2
        device, dtype, size, steps = "cuda", torch.bfloat16, args.size or 1024, args.steps or [4, 50]
    rows = []
    for kind in args.models:
        rows += run(kind, real=not args.tiny, size=size, steps_list=steps, device=device, dtype=dtype)
    print("\n| model | shapes | denoiser params (M) | steps | NFE | s / step | total s | peak GB | device |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['shapes']} | {r['denoiser_params_m']} | {r['steps']} | {r['nfe']} | "
              f"{r['median_step_s']} | {r['total_s']} | {r['peak_mem_gb']} | {r['device']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
