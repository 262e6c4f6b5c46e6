"""The memory a distillation job needs, planned before it starts (PyTorch's meta device: shapes,
no weights, no time).

A job holds (engine/distill/run.py): the teacher's whole pipeline, frozen, in the dtype mixed
precision computes in (float32 without); the student's
denoiser (a full copy, or, for a LoRA student, only the adapter and the modules it adds: its base
is the teacher's own weights); for the trainable parameters their gradients, AdamW's two moments and
the EMA copy, all float32; and the activations the student's forward saves for its backward. Parameter,
gradient, optimiser and EMA bytes are counted exactly, from the student the job would build, made on
the meta device by the job's own functions. Activations are the bytes autograd saves in one
forward of that student at the recipe's batch size and image size, measured on the meta device
with attention saving what a fused kernel (flash or memory-efficient) saves: its inputs, its
output and the log-sum-exp, not the attention matrix; with gradient checkpointing (diffusers' own
switch), what the checkpointed forward saves plus the inputs the blocks keep and the largest
block's activations, recomputed in the backward. Allocator slack and kernels' workspaces are not
counted: the plan leaves 10% of the device free for them.
"""

from __future__ import annotations

import json
import math
import os
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import UsageError
from ..registry import lab_json, safetensors_header
from .recipes import LoraSpec, Recipe

HEADROOM = 0.9  # the share of a device's memory a plan may fill
PARAM_BYTES = 4  # what trains, its gradients, optimiser state and EMA are float32
TEXT_TOKENS = {"sd": 77, "sdxl": 77, "flux": 512, "flux2": 512, "sd3": 333, "embedded": 32}
GIB = 2**30


@dataclass
class MemoryPlan:
    parts: dict[str, int]  # bytes of each thing the job holds
    activations_checkpointed: int  # what activations would be with gradient checkpointing
    device: str
    device_bytes: int | None  # None: unknown (the plan is not checked against it)
    batch_size: int
    size: int  # image side the job trains at
    trainable: int  # parameters trained
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.device_bytes is None or self.total <= HEADROOM * self.device_bytes

    def to_json(self) -> dict:
        return {**asdict(self), "total": self.total, "fits": self.fits}

    def summary(self) -> str:
        """One line: the total against the device, then the parts."""
        device = f" of the {human(self.device_bytes)} of {self.device}" if self.device_bytes else ""
        parts = ", ".join(f"{k} {human(v)}" for k, v in self.parts.items())
        return f"{human(self.total)}{device} ({parts})"


def human(n: int) -> str:
    """Bytes as GiB, or MiB below a tenth of one (a tiny model's parts would all read 0.00 GiB)."""
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 2**20:.1f} MiB"


# -- the networks, on the meta device ------------------------------------------------------------------

_PATCH = threading.Lock()  # one plan at a time swaps attention (the app plans in its worker threads)


@contextmanager
def flash_like_attention():
    """Attention on the meta device that saves, for its backward, what fused kernels save (not the
    L x L matrix the meta device's math kernel would), so activation bytes are a GPU's. Tensors on
    any other device, in any thread, meanwhile get torch's own attention."""
    import torch
    import torch.nn.functional as F

    class Fused(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):
            out = q.new_empty((*q.shape[:-1], v.shape[-1]))
            lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
            ctx.save_for_backward(q, k, v, out, lse)
            return out

        @staticmethod
        def backward(ctx, grad):
            q, k, v, _, _ = ctx.saved_tensors
            return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    with _PATCH:
        original = F.scaled_dot_product_attention

        def fused(query, key, value, *args, **kwargs):
            if query.device.type != "meta":
                return original(query, key, value, *args, **kwargs)
            return Fused.apply(query, key, value)

        F.scaled_dot_product_attention = fused
        try:
            yield
        finally:
            F.scaled_dot_product_attention = original


def meta_denoiser(path: Path):
    """The denoiser of a model directory, on the meta device, as the lab loads it (an adapter
    student: its base with the modules it adds)."""
    import diffusers
    from accelerate import init_empty_weights

    from ..families.adapter import base_path

    meta = lab_json(path)
    if "base" in meta:
        net = meta_denoiser(base_path(path, meta))
        return guidance_student(net) if meta.get("guidance_input") else net
    folder = next((path / d for d in ("unet", "transformer") if (path / d / "config.json").exists()), None)
    if folder is None:
        raise UsageError(f"teacher: {path} has no unet/ or transformer/ config to plan with")
    config = json.loads((folder / "config.json").read_text())
    with init_empty_weights(include_buffers=True):
        return getattr(diffusers, config["_class_name"]).from_config(config)


def guidance_student(net):
    """The teacher's denoiser with a guidance input (what `Family.with_guidance_input` builds), on meta."""
    from accelerate import init_empty_weights

    from ..families.guidance import GUIDANCE_DIM

    config = dict(net.config)
    if "time_cond_proj_dim" in config:
        if config["time_cond_proj_dim"] is not None:
            return net
        config["time_cond_proj_dim"] = GUIDANCE_DIM
    elif "guidance_embeds" in config:
        if config["guidance_embeds"]:
            return net
        config["guidance_embeds"] = True
    else:
        raise UsageError(f"technique: a {type(net).__name__} has no guidance input")
    with init_empty_weights(include_buffers=True):
        return type(net).from_config(config)


INT_BYTES = {"I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def other_bytes(path: Path, size: int = PARAM_BYTES) -> int:
    """Bytes of everything but the denoiser (text encoders, VAE) as the job loads them (floating
    point at `size` bytes), from safetensors headers."""
    from ..families.adapter import base_path

    meta = lab_json(path)
    if "base" in meta:
        return other_bytes(base_path(path, meta), size)
    total = 0
    for weights in path.rglob("*.safetensors"):
        if weights.parent.name in ("unet", "transformer") or weights.parent == path:
            continue
        total += sum(math.prod(t["shape"]) * INT_BYTES.get(t["dtype"], size)
                     for t in safetensors_header(weights).values())
    return total


def module_bytes(net, size: int = PARAM_BYTES) -> int:
    """A network's parameters (floating point at `size` bytes) and the buffers it saves (its
    weights files hold both; non-persistent buffers, such as position ids, are a few bytes)."""
    return size * sum(p.numel() for p in net.parameters()) + sum(
        b.numel() * (size if b.is_floating_point() else b.element_size()) for b in persistent_buffers(net))


def compute_dtype(recipe: Recipe):
    """The dtype the job computes in (accelerate's mixed precision), which is also the dtype its
    frozen networks are held in (engine/distill/trainer.py)."""
    from ..registry import DTYPES
    from .trainer import FROZEN_DTYPE, resolve_mixed_precision

    return DTYPES[FROZEN_DTYPE[resolve_mixed_precision(recipe.mixed_precision)]]


def persistent_buffers(net) -> list:
    return [b for m in net.modules() for name, b in m.named_buffers(recurse=False)
            if name not in m._non_persistent_buffers_set]


def image_size(path: Path, family: str, net) -> int:
    """The side the job trains at: the teacher's default size (lab.json), else its native one."""
    meta = lab_json(path)
    if meta.get("default_size"):
        return int(meta["default_size"])
    if "base" in meta:
        from ..families.adapter import base_path
        return image_size(base_path(path, meta), family, net)
    if family == "embedded":
        return int(meta.get("config", {}).get("image_size", 32))
    if family in ("sd", "sdxl", "sd3"):  # their pipelines' default_sample_size is the denoiser's
        return int(net.config.sample_size) * vae_factor(path)
    return 128 * vae_factor(path)  # FluxPipeline's and Flux2KleinPipeline's default_sample_size


def vae_factor(path: Path) -> int:
    config = path / "vae" / "config.json"
    if not config.exists():
        return 8
    return 2 ** (len(json.loads(config.read_text())["block_out_channels"]) - 1)


# -- activations ------------------------------------------------------------------------------------

def denoiser_inputs(family: str, net, batch: int, size: int, factor: int, dtype) -> dict:
    """Keyword arguments of one forward of `net` as the family calls it (engine/families/*), on meta."""
    import torch

    def z(*shape):
        return torch.empty(shape, device="meta", dtype=dtype)
    cfg = net.config
    b, tokens = batch, TEXT_TOKENS[family]
    if family in ("embedded", "sd", "sdxl"):
        side = size // (2 if family == "embedded" else factor)
        kw = {"sample": z(b, cfg.in_channels, side, side), "timestep": z(b),
              "encoder_hidden_states": z(b, tokens, cfg.cross_attention_dim)}
        if family == "embedded":
            kw["encoder_attention_mask"] = torch.ones((b, tokens), device="meta", dtype=torch.bool)
        if cfg.time_cond_proj_dim:
            kw["timestep_cond"] = z(b, cfg.time_cond_proj_dim)
        if family == "sdxl":
            pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            kw["added_cond_kwargs"] = {"text_embeds": z(b, pooled), "time_ids": z(b, 6)}
        return kw
    side = size // (factor * 2)
    if family == "sd3":
        return {"hidden_states": z(b, cfg.in_channels, side * 2, side * 2), "timestep": z(b),
                "encoder_hidden_states": z(b, tokens, cfg.joint_attention_dim),
                "pooled_projections": z(b, cfg.pooled_projection_dim)}
    n = side * side
    kw = {"hidden_states": z(b, n, cfg.in_channels), "timestep": z(b),
          "encoder_hidden_states": z(b, tokens, cfg.joint_attention_dim),
          "guidance": z(b) if cfg.guidance_embeds else None}
    if family == "flux":
        kw.update(pooled_projections=z(b, cfg.pooled_projection_dim), txt_ids=z(tokens, 3), img_ids=z(n, 3))
    else:
        kw.update(txt_ids=z(b, tokens, 4), img_ids=z(b, n, 4))
    return kw


def saved_bytes(net, inputs: dict, *, checkpointing: bool) -> int:
    """Bytes autograd keeps for the backward of one forward of `net` (its own parameters excluded:
    they are counted as parameters). With checkpointing: what the checkpointed forward keeps, the
    inputs its checkpointed units hold on to, and the largest unit's activations, recomputed in
    the backward."""
    import torch

    params = {id(p) for p in net.parameters()}
    counter = {"bytes": 0}

    def pack(t):
        if id(t) not in params and not (t._base is not None and id(t._base) in params):
            counter["bytes"] += t.numel() * t.element_size()
        return t

    def run() -> int:
        counter["bytes"] = 0
        with flash_like_attention(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(**inputs)
        return counter["bytes"]

    if not checkpointing:
        return run()
    # 1. The checkpointed forward, noting each unit diffusers checkpoints and the tensors it is given.
    units, held = [], {}
    net.enable_gradient_checkpointing()
    owners = [m for m in net.modules() if getattr(m, "gradient_checkpointing", False)]
    for owner in owners:
        def recording(block, *args, _checkpoint=owner._gradient_checkpointing_func, **kwargs):
            units.append(block)
            for a in (*args, *kwargs.values()):
                if torch.is_tensor(a):
                    held[id(a)] = a
            return _checkpoint(block, *args, **kwargs)
        owner._gradient_checkpointing_func = recording
    try:
        outside = run()
    finally:
        net.disable_gradient_checkpointing()
    # 2. Each unit's own activations, from a forward without checkpointing.
    sizes, hooks = {}, []
    for unit in {id(u): u for u in units if isinstance(u, torch.nn.Module)}.values():
        hooks.append(unit.register_forward_pre_hook(lambda m, a: sizes.__setitem__(m, -counter["bytes"])))
        hooks.append(unit.register_forward_hook(lambda m, a, o: sizes.__setitem__(m, sizes[m] + counter["bytes"])))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    kept = sum(t.numel() * t.element_size() for t in held.values() if t.requires_grad or t.grad_fn is not None)
    return outside + kept + max(sizes.values(), default=0)


# -- the plan ---------------------------------------------------------------------------------------

def plan(recipe: Recipe, teacher: Path, family: str, *, device: str = "auto",
         device_bytes: int | None = None) -> MemoryPlan:
    """The memory plan of `recipe` on the teacher at `teacher` (a model directory of `family`):
    the largest of its rounds. `device_bytes` overrides the device's own memory (planning for
    another machine)."""
    net = meta_denoiser(teacher)
    others = other_bytes(teacher, compute_dtype(recipe).itemsize)
    size, factor = image_size(teacher, family, net), vae_factor(teacher)
    kinds = {r["kind"] for r in recipe.rounds()}
    plans = [plan_round(recipe, net, others, family, kind, size, factor) for kind in kinds]
    worst = max(plans, key=lambda p: p.total)
    name, memory = device_memory(device) if device_bytes is None else (device, device_bytes)
    return replace(worst, device=name, device_bytes=memory)


def plan_round(recipe: Recipe, net, others: int, family: str, kind: str, size: int, factor: int) -> MemoryPlan:
    """One round's plan, from the teacher's denoiser on meta and the bytes of the rest of its
    pipeline (held, like the denoiser, in the compute dtype: they are frozen)."""
    import torch

    from .lora import apply_lora_to

    student = guidance_student(net) if kind in ("guidance", "consistency") else net
    before = {n for n, _ in net.named_parameters()}
    new = [n for n, _ in student.named_parameters() if n not in before]
    if student is net:  # the student is a copy of the teacher's denoiser: a fresh meta one to train
        from accelerate import init_empty_weights
        with init_empty_weights(include_buffers=True):
            student = type(net).from_config(net.config)
    if recipe.lora:
        trainable = apply_lora_to(student, recipe.lora, new, lora_targets(family))
    else:
        student.requires_grad_(True)
        trainable = list(student.parameters())
    n_train = sum(p.numel() for p in trainable)
    compute = compute_dtype(recipe)
    parts = {"teacher": module_bytes(net, compute.itemsize) + others}
    # A full student is a copy of the teacher's denoiser; a LoRA student holds only what it trains
    # (its adapter and new modules) over the teacher's own weights.
    parts["student"] = PARAM_BYTES * n_train if recipe.lora else module_bytes(student)
    parts["gradients"] = PARAM_BYTES * n_train
    parts["optimizer"] = 2 * PARAM_BYTES * n_train  # AdamW's two moments
    if recipe.ema:
        parts["ema"] = PARAM_BYTES * n_train
    if kind == "consistency" and recipe.target_ema:
        parts["target network"] = PARAM_BYTES * n_train  # the EMA target's copy of what trains
    if kind == "dmd":  # the fake score: a second trained copy (or adapter), its gradients and AdamW moments
        parts["fake score"] = parts["student"] + 3 * PARAM_BYTES * n_train
    torch.nn.Module.to(student, dtype=compute)  # the dtype autocast computes in (meta: no data moves)
    inputs = denoiser_inputs(family, student, recipe.batch_size, size, factor, compute)
    full = saved_bytes(student, inputs, checkpointing=False)
    ckpt = saved_bytes(student, inputs, checkpointing=True) if hasattr(student, "enable_gradient_checkpointing") \
        else full
    parts["activations"] = ckpt if recipe.gradient_checkpointing else full
    if kind == "dmd":  # the fake score's backward runs while the generator's forward is held
        parts["activations"] *= 2
    return MemoryPlan(parts=parts, activations_checkpointed=ckpt, device="", device_bytes=None,
                      batch_size=recipe.batch_size, size=size, trainable=n_train)


def lora_targets(family: str) -> tuple[str, ...]:
    """The modules a family's LoRA students adapt by default (its adapter's `lora_targets`)."""
    from ..families import catalog
    from ..families.base import Family

    return catalog.adapter(family).lora_targets if family in catalog.ADAPTERS else Family.lora_targets


def device_memory(device: str = "auto") -> tuple[str, int | None]:
    """(name, bytes) of the device a job would run on: the first CUDA GPU, or this machine's RAM."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name})", props.total_memory
    try:
        return "cpu (RAM)", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "cpu (RAM)", None


def suggestion(recipe: Recipe, planner, device_bytes: int | None) -> str | None:
    """The first change, in the order a user would reach for them, that makes the job fit
    `device_bytes`: gradient checkpointing, a LoRA student (rank 64), both, then a smaller batch,
    then the recipe as it is sharded over N GPUs; None if nothing does. `planner(recipe)` plans a
    recipe (`plan` or `plan_round`)."""
    tries = []
    if not recipe.gradient_checkpointing:
        tries.append(("--gradient-checkpointing", replace(recipe, gradient_checkpointing=True)))
    if recipe.lora is None:
        tries.append(("--lora-rank 64", replace(recipe, lora=LoraSpec(rank=64))))
        tries.append(("--lora-rank 64 --gradient-checkpointing",
                      replace(recipe, lora=LoraSpec(rank=64), gradient_checkpointing=True)))
    best = tries[-1][1] if tries else recipe
    batch = best.batch_size
    while batch > 1:
        batch //= 2
        tries.append((f"{tries[-1][0] + ' ' if tries else ''}--batch-size {batch}", replace(best, batch_size=batch)))
    for flags, candidate in tries:
        p = replace(planner(candidate), device_bytes=device_bytes)
        if p.fits:
            return f"it fits with {flags} ({p.total / GIB:.1f} GiB)"
    asked = replace(planner(recipe), device_bytes=device_bytes)
    for n in (2, 4, 8):
        p = sharded(asked, n)
        if p.fits:
            return (f"it fits sharded over {n} GPUs ({p.total / GIB:.1f} GiB each, planned as FSDP's full sharding "
                    f"of what trains): --accelerate-config with an FSDP plugin")
    return None


def sharded(memory: MemoryPlan, n: int) -> MemoryPlan:
    """A plan as FSDP's full sharding over `n` GPUs would hold it on each: the student, its
    gradients, optimiser state and EMA divided by n; the frozen teacher and the activations whole.
    An estimate: sharding itself has not been measured."""
    parts = {k: v // n if k in ("student", "gradients", "optimizer", "ema") else v for k, v in memory.parts.items()}
    return replace(memory, parts=parts, notes=[*memory.notes, f"sharded over {n} GPUs (FSDP, estimated)"])
