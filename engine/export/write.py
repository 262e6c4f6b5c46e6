"""Writing an export (engine/export/__init__.py says what each format holds)."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import torch

from .. import registry
from ..errors import UsageError
from ..generate import defaults
from ..store import Store
from . import check_format, check_out

HERE = Path(__file__).resolve().parent
SHAPES_PIPELINE = HERE / "shapes_pipeline.py"
GUIDANCE_INPUT = "guidance_input.safetensors"  # modules a LoRA student trained fully (lora format)
GUIDANCE_CONFIG = "guidance_input.json"  # the denoiser config change those modules need
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def stored_dtype(path: Path) -> torch.dtype:
    """The dtype a model directory stores its denoiser in, from a safetensors header: exporting in it
    loses nothing of what the lab samples. An adapter student is merged in float32 when loaded."""
    if "base" in registry.lab_json(path):
        return torch.float32
    for folder in ("unet", "transformer"):
        for weights in sorted((path / folder).glob("*.safetensors")):
            kinds = {t["dtype"] for t in registry.safetensors_header(weights).values()}
            for code in ("F32", "BF16", "F16"):
                if code in kinds:
                    return DTYPES[code]
    return torch.float32


def export(store: Store | None, name: str, out: Path, fmt: str = "diffusers") -> dict:
    """Write model `name` to the new directory `out` in `fmt`; returns what was written and the call
    that loads it."""
    check_format(fmt)
    out = Path(out).expanduser().absolute()
    check_out(out)
    path = registry.resolve(name, store, field="NAME")
    registry.check_complete(path, field="NAME")
    meta = registry.lab_json(path)
    if fmt == "lora" and "base" not in meta:
        raise UsageError(f"NAME: {name!r} is not a LoRA adapter student (its recipe saved it merged, or it was "
                         f"trained fully); export it with --format diffusers")
    if meta.get("sampler", "ddim") != "ddim":
        raise UsageError(f"NAME: {name!r} samples by consistency sampling (a {meta.get('kind')} student), which the "
                         f"lab does not export yet: no stock diffusers scheduler draws its fresh noise from the "
                         f"image's seed as the lab does, so its images would not be the lab's")
    family = registry.load(name, store=store, device="cpu", dtype="float32")
    # The call's arguments first: they refuse, in one line, a student no stock pipeline runs as the
    # lab does, before anything is written.
    arguments = _call_kwargs(family)
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        # The card's code names the folder by its name: it runs beside it, wherever it was copied.
        write = _write_lora if fmt == "lora" else _write_diffusers
        call = write(family, path, meta, partial, Path(out.name), arguments)
        (partial / "README.md").write_text(model_card(store, name, family, meta, fmt, call, out.name))
        if out.exists():
            out.rmdir()
        partial.rename(out)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise UsageError(f"--out: could not write the export ({e.strerror or e}); nothing was left behind") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {"name": name, "format": fmt, "out": str(out), "files": sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()), "load": call}


def _call_kwargs(family) -> str:
    """The pipeline call's arguments that make the lab's image at the steps and guidance the model
    runs at by default (engine/generate.py), the guidance as the family's pipeline takes it (a FLUX.1
    model without a guidance input: true CFG with the empty prompt)."""
    steps, guidance = defaults(family)
    if family.name == "embedded":
        kwargs = {"guidance_scale": guidance}
    else:
        kwargs = {**family.pipeline_kwargs(guidance), "height": family.default_size, "width": family.default_size}
    args = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in kwargs.items())
    return f"num_inference_steps={steps}, {args}, generator=torch.Generator().manual_seed(0)"


# -- diffusers ---------------------------------------------------------------------------------------

def _write_diffusers(family, path: Path, meta: dict, tmp: Path, out: Path, arguments: str) -> str:
    dtype = stored_dtype(path)
    lab_meta = {k: v for k, v in meta.items() if k not in ("base", "base_sha256", "family", "config")}
    if family.name == "embedded":
        _write_shapes_pipeline(family, tmp, dtype, lab_meta)
        loader = f'DiffusionPipeline.from_pretrained("{out}", trust_remote_code=True)'
    else:
        family.save(tmp, dtype=dtype, extra=lab_meta)
        loader = f'DiffusionPipeline.from_pretrained("{out}")'
    return f'pipe = {loader}\nimage = pipe("a prompt", {arguments}).images[0]'


def _write_shapes_pipeline(family, tmp: Path, dtype: torch.dtype, lab_meta: dict) -> None:
    """The embedded family as a diffusers directory with its own pipeline code beside it."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler
    from safetensors.torch import save_file

    tmp.mkdir(parents=True)
    torch.nn.Module.to(copy.deepcopy(family.denoiser), dtype=dtype).save_pretrained(tmp / "unet")
    enc = tmp / "text_encoder"
    enc.mkdir()
    cfg = family.text_encoder.config
    config = {"_class_name": "ShapesTextEncoder", "_diffusers_version": diffusers.__version__, "vocab": cfg.vocab,
              "width": cfg.width, "layers": cfg.layers, "heads": cfg.heads, "max_len": cfg.max_len}
    (enc / "config.json").write_text(json.dumps(config, indent=1))
    save_file({k: v.detach().to(dtype).contiguous() for k, v in family.text_encoder.state_dict().items()},
              enc / "diffusion_pytorch_model.safetensors")
    shutil.copyfile(SHAPES_PIPELINE, enc / "shapes_pipeline.py")
    shutil.copyfile(SHAPES_PIPELINE, tmp / "pipeline.py")
    FlowMatchEulerDiscreteScheduler(shift=family.cfg.shift).save_pretrained(tmp / "scheduler")
    index = {"_class_name": ["pipeline", "ShapesPipeline"], "_diffusers_version": diffusers.__version__,
             "guidance_embedding": family.guidance_embedding,
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "text_encoder": ["shapes_pipeline", "ShapesTextEncoder"], "unet": ["diffusers", "UNet2DConditionModel"]}
    (tmp / "model_index.json").write_text(json.dumps(index, indent=1))
    # The lab reads the same directory back (`register`), as the embedded family.
    (tmp / "lab.json").write_text(json.dumps({"family": "embedded", "config": family.config_json(),
                                              **family.guidance_meta(), **lab_meta}, indent=1))


# -- LoRA --------------------------------------------------------------------------------------------

def _write_lora(family, path: Path, meta: dict, tmp: Path, out: Path, arguments: str) -> str:
    from safetensors import safe_open

    from ..families.adapter import ADAPTER_WEIGHTS, NEW_MODULES, check_base

    base = check_base(path, meta)
    with safe_open(path / "adapter" / ADAPTER_WEIGHTS, "pt") as f:
        layers = {k: f.get_tensor(k) for k in f.keys()}
        adapter_meta = json.loads((f.metadata() or {}).get("lora_adapter_metadata", "null"))
    if family.name == "embedded":
        from diffusers.loaders import StableDiffusionLoraLoaderMixin as saver
        component = "unet"
    else:
        saver, component = family.pipeline_class, family.denoiser_name
    tmp.mkdir(parents=True)
    saver.save_lora_weights(tmp, **{f"{component}_lora_layers": layers,
                                    f"{component}_lora_adapter_metadata": adapter_meta})
    if family.name == "embedded":
        # No stock pipeline runs the embedded family: its base travels with the adapter (a few MB),
        # exported as a diffusers pipeline of its own.
        from ..families.embedded import EmbeddedFamily
        base_family = EmbeddedFamily.load(base)
        base_family.guidance_embedding = family.guidance_embedding  # what the pipeline feeds the student
        _write_shapes_pipeline(base_family, tmp / "base", stored_dtype(base), {})
        lines = [f'pipe = DiffusionPipeline.from_pretrained("{out}/base", trust_remote_code=True)']
    else:
        # The base's own scheduler may not be the lab's sampler (a DDIM that stops short of sigma 0):
        # the one that is travels with the adapter.
        scheduler = family.equivalent_scheduler()
        scheduler.save_pretrained(tmp / "scheduler")
        lines = ["pipe = DiffusionPipeline.from_pretrained(BASE)",
                 f"pipe.scheduler = {type(scheduler).__name__}.from_pretrained(\"{out}\", subfolder=\"scheduler\")"]
    if (path / NEW_MODULES).exists():
        base_config = json.loads((base / component / "config.json").read_text())
        change = {k: v for k, v in family.denoiser.config.items()
                  if not k.startswith("_") and base_config.get(k) != v}
        shutil.copyfile(path / NEW_MODULES, tmp / GUIDANCE_INPUT)
        (tmp / GUIDANCE_CONFIG).write_text(json.dumps(change, indent=1))
        lines += [
            "# the guidance input, trained fully beside the LoRA: a denoiser with room for it, then its weights",
            f"net = pipe.{component}",
            f"net = type(net).from_config({{**net.config, **json.load(open(\"{out}/{GUIDANCE_CONFIG}\"))}})"
            f".to(pipe.{component}.dtype)",
            f"net.load_state_dict({{**pipe.{component}.state_dict(), "
            f"**load_file(\"{out}/{GUIDANCE_INPUT}\")}})",
            f"pipe.register_modules({component}=net)",
        ]
    lines += [f'pipe.load_lora_weights("{out}")',
              f'image = pipe("a prompt", {arguments}).images[0]']
    (tmp / "base.json").write_text(json.dumps({"base": str(base), "base_model": meta.get("base_model"),
                                               "base_sha256": meta.get("base_sha256")}, indent=1))
    return "\n".join(lines).replace("BASE", f'"{base}"')


# -- the model card ----------------------------------------------------------------------------------

def model_card(store: Store | None, name: str, family, meta: dict, fmt: str, call: str, folder: str) -> str:
    """README.md of an export: what the model is, where it comes from, what was measured, how to use it."""
    chain = registry.lineage(store, name)
    steps, guidance = defaults(family)
    imports = ["import torch", "from diffusers import DiffusionPipeline"]
    scheduler = re.search(r"pipe.scheduler = (\w+)\.", call)
    if scheduler:
        imports[1] = f"from diffusers import DiffusionPipeline, {scheduler.group(1)}"
    if GUIDANCE_INPUT in call:
        imports = ["import json", *imports, "from safetensors.torch import load_file"]
    lines = [f"# {name}", "",
             f"A {meta.get('kind') or 'distilled'} student ({family.name} family) exported from Distillation Lab "
             f"as {'a LoRA adapter in diffusers format' if fmt == 'lora' else 'a diffusers pipeline'}.", "",
             "## Use it", "", f"From the folder that holds `{folder}`:", "", "```python", *imports, call, "```", "",
             f"It samples at {steps} steps with guidance {guidance:g} "
             f"({'one pass per step' if family.guidance_embedded else 'classifier-free guidance, two passes per step'}"
             f"); the scheduler saved with it is the one whose steps are the lab's sampler.", "",
             *(["`trust_remote_code=True` runs the `pipeline.py` beside the weights: Distillation Lab's own "
                "pipeline for its embedded family (torch and diffusers only); read it before you trust it.", ""]
               if family.name == "embedded" else []),
             "## Lineage", "", " -> ".join(f"`{m}`" for m in chain), ""]
    rows = _measurements(store, name)
    if rows:
        lines += ["## Measured in the lab", "", "| what | steps | guidance | value | prompts |",
                  "|---|---|---|---|---|", *rows, ""]
    if meta.get("recipe"):
        lines += ["## Recipe", "", "```json", json.dumps(meta["recipe"], indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)


def _measurements(store: Store | None, name: str) -> list[str]:
    if store is None:
        return []
    rows = [f"| adherence (round evaluation) | {e['steps']} | {e['guidance']:g} | {e['adherence']:.3f} | {e['n']} |"
            for e in store.job_evals() if e.get("model") == name and e.get("adherence") is not None]
    for run in store.eval_runs(model=name):
        result = run.get("result") or {}
        for key in ("adherence", "fid", "clip_score"):
            value = result.get(key)
            if isinstance(value, (int, float)):
                settings = run.get("settings") or {}
                rows.append(f"| {key} (golden set {run.get('golden')}) | {settings.get('steps', '')} | "
                            f"{settings.get('guidance', '')} | {value:.3f} | {result.get('n', '')} |")
    for bench in store.bench_runs(limit=200):  # speed: the bench rows that ran this model, on their device
        for r in bench["rows"]:
            if r.get("model") == name and r.get("speedup") is not None and r.get("key", "").count("+") == 0:
                rows.append(f"| speed-up over {bench['model']} ({r['nfe']:g} passes, {r['seconds']:g} s an image, "
                            f"{bench['device']}) | {r['steps']} | {r['guidance']:g} | {r['speedup']:g}x | |")
    return rows
