"""Memory plans of distillation jobs on real model shapes, on PyTorch's meta device (no weights,
seconds on a CPU): SDXL, FLUX.2 klein 4B and FLUX.1-dev, a guidance round at 1024x1024, batch 1,
bf16 mixed precision, full and LoRA rank 64, with and without gradient checkpointing; against an
80 GB and a 141 GB GPU. Prints a Markdown table (docs/distillation.md#memory).

The denoisers and VAEs are `engine/families/synthetic.py`'s real shapes; the text encoders are
built here at their published shapes (CLIP ViT-L and bigG, T5-XXL's encoder, Qwen3-4B), since the
job loads them too.

    python scripts/memory_plans.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from accelerate import init_empty_weights

from engine.distill import memory
from engine.distill.recipes import LoraSpec, Recipe
from engine.families import catalog, synthetic

GPUS = {"80 GB": 80e9, "141 GB": 141e9}


def text_encoders(kind: str) -> list[torch.nn.Module]:
    """The text encoders a real pipeline of `kind` loads, at their published shapes, on meta."""
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        Qwen3Config,
        Qwen3ForCausalLM,
        T5Config,
        T5EncoderModel,
    )

    clip_l = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            projection_dim=768)
    if kind == "sdxl":
        big_g = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                               num_attention_heads=20, projection_dim=1280)
        return [CLIPTextModel(clip_l), CLIPTextModelWithProjection(big_g)]
    if kind == "flux-dev":
        t5 = T5Config(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=32128,
                      feed_forward_proj="gated-gelu")
        return [CLIPTextModel(clip_l), T5EncoderModel(t5)]
    qwen = Qwen3Config(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True)
    return [Qwen3ForCausalLM(qwen)]


def main() -> None:
    rows = []
    for kind, family in (("sdxl", "sdxl"), ("flux2-klein", "flux2"), ("flux-dev", "flux")):
        with init_empty_weights(), catalog.quiet():
            pipe = synthetic.build(kind, real=True, device="meta")
        with torch.device("meta"):
            encoders = text_encoders(kind)
        net = pipe.unet if family == "sdxl" else pipe.transformer
        others = memory.module_bytes(pipe.vae, 2) + sum(memory.module_bytes(m, 2) for m in encoders)  # bf16
        factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        for lora in (None, LoraSpec(rank=64)):
            for ckpt in (False, True):
                recipe = Recipe(technique="guidance", teacher=kind, name="plan", batch_size=1, lora=lora,
                                mixed_precision="bf16", gradient_checkpointing=ckpt)
                p = memory.plan_round(recipe, net, others, family, "guidance", 1024, factor)
                fits = [name for name, size in GPUS.items() if p.total <= memory.HEADROOM * size]
                rows.append([kind, "LoRA r64" if lora else "full", "yes" if ckpt else "no",
                             f"{sum(q.numel() for q in net.parameters()) / 1e9:.2f}B",
                             *(f"{p.parts.get(k, 0) / 1e9:.1f}" for k in
                               ("teacher", "student", "gradients", "optimizer", "ema", "activations")),
                             f"**{p.total / 1e9:.1f}**", ", ".join(fits) or "neither"])
    head = ["model", "student", "grad. ckpt", "denoiser", "teacher GB", "student GB", "grads GB", "AdamW GB",
            "EMA GB", "activations GB", "total GB", "fits (90%)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
