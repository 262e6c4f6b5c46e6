"""Runtime acceleration without retraining: caches and FP8 (DESIGN.md §6).

Each technique is an `apply_*(model, config)` / `remove_*(model)` pair on a family's denoiser,
through diffusers' hook registry (hooks.py):
teacache.py         the lab's TeaCache, on any denoiser; calibrate.py fits its polynomial and threshold
diffusers_cache.py  diffusers' FirstBlockCache, MagCache and TaylorSeer on the transformers that have them
fp8.py              float8 weight storage (any device) or compute (GPU, compute capability >= 8.9)
options.py          the choices by name (`teacache:0.2`, `weights`), checked without importing torch
runtime.py          `accelerated`: a choice switched on around one use of a model, then undone
"""
