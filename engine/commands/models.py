"""Commands on models: generate an image, check parity with a diffusers pipeline, register a model
directory under a name, save a tiny random-weight pipeline to try the lab on."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from ..request import Request, check_guidance
from .args import COMMON, DATA_DIR, SEED, SIZE, STEPS, arg, command, number, open_store, say


@command("generate", "generate one image and print its measurement as JSON",
         arg("--model", default="embedded"),
         arg("--prompt", required=True),
         arg("--steps", type=STEPS, default=None,
             help="default: the model's own (a student's recommended steps, else its pipeline's; embedded: 50)"),
         arg("--guidance", type=number, default=None,
             help="default: the model's own (a student's recommended scale, else its pipeline's; embedded: 5)"),
         arg("--seed", type=SEED, default=0),
         arg("--height", type=SIZE, default=None),
         arg("--width", type=SIZE, default=None),
         arg("--out", default="out.png", help="where to write the image (PNG)"),
         arg("--cache", default="none", metavar="METHOD[:THRESHOLD]",
             help="none, teacache, fbcache, magcache, taylorseer (as the model supports); "
                  "no threshold: the calibrated or default one"),
         arg("--fp8", default="off", help="off, weights (float8 storage, any device) or compute (GPU cc >= 8.9)"),
         *COMMON)
def generate(args) -> dict:
    req = Request(prompt=args.prompt, steps=args.steps, guidance=args.guidance, seed=args.seed,
                  height=args.height, width=args.width, cache=args.cache, fp8=args.fp8)
    req.check()
    out = Path(args.out)
    if out.suffix.lower() != ".png" or out.is_dir():
        raise UsageError(f"--out must be a .png file, got {args.out!r}")
    if not out.parent.is_dir():
        raise UsageError(f"--out: {str(out.parent)!r} is not a folder")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"--out: the folder {str(out.parent)!r} cannot be written")
    from .. import registry
    from ..generate import run

    store = open_store(args)
    family = registry.load(args.model, store=store, device=args.device, dtype=args.dtype)
    image, record = run(family, req, model_name=args.model, store=store, log=say)
    image.save(out)
    return {**record, "out": str(out)}


@command("parity", "compare the lab's sampler with the model's own diffusers pipeline",
         arg("--model", required=True),
         arg("--prompt", default="a photo of a red fox in the snow"),
         arg("--steps", type=STEPS, default=4),
         arg("--guidance", type=number, default=3.5),
         arg("--seed", type=SEED, default=0),
         arg("--height", type=SIZE, default=None),
         arg("--width", type=SIZE, default=None),
         *COMMON)
def parity(args) -> dict:
    check_guidance(args.guidance, "--guidance")
    from .. import registry
    from ..parity import compare

    family = registry.load(args.model, store=open_store(args), device=args.device, dtype=args.dtype)
    result = compare(family, args.prompt, steps=args.steps, guidance=args.guidance, seed=args.seed,
                     height=args.height or family.default_size, width=args.width or family.default_size)
    return {"model": args.model, **result}


@command("register", "name a diffusers directory or cached hub id for every model picker",
         arg("--name", required=True),
         arg("--model", required=True, help="a diffusers directory (model_index.json) or a cached hub id"),
         arg("--replace", action="store_true", help="give the name to this model even if it is taken"),
         DATA_DIR)
def register(args) -> dict:
    from .. import registry

    row = registry.register(open_store(args), args.name, args.model, replace=args.replace)
    return {"name": row["name"], "family": row["family"], "path": row["path"]}


@command("random-model", "save a tiny random-weight diffusers pipeline (to try --model PATH)",
         arg("--kind", required=True, help="sd, sd-v, sdxl, flux, flux-dev, flux2-klein or sd3"),
         arg("--out", required=True, help="directory to create"),
         arg("--seed", type=SEED, default=0))
def random_model(args) -> dict:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out: {str(out)!r} exists and is not empty; name a new directory")
    from ..families import catalog, synthetic

    if args.kind not in synthetic.KINDS:
        raise UsageError(f"--kind must be one of {', '.join(synthetic.KINDS)}, got {args.kind!r}")
    with catalog.quiet():
        synthetic.save(args.kind, out, seed=args.seed)
    return {"kind": args.kind, "family": synthetic.FAMILY[args.kind], "path": str(out)}


