"""Train the embedded teacher (`python -m engine train-teacher`): rectified flow with condition dropout.

Loss: || u_hat(z_t, t, c) - (eps - x0) ||^2 with z_t = (1 - t) x0 + t eps (Liu et al. 2022;
Esser et al. 2024 for the logit-normal t). Captions are dropped to the empty prompt with
probability `cond_dropout`, so the same network is also the unconditional model that
classifier-free guidance needs (Ho & Salimans 2021).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from .families.embedded import EmbeddedConfig, EmbeddedFamily
from .world import describe, mislabel
from .world.config import TeacherTrainConfig
from .world.dataset import render_dataset


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _captions(scenes, idx: torch.Tensor, step: int, dropout: float, noise: float, seed: int) -> list[str]:
    """Fresh captions for a batch: a fraction `dropout` empty, a fraction `noise` misstating one attribute."""
    rng = random.Random(f"captions-{seed}-{step}")
    out = []
    for i in idx.tolist():
        if rng.random() < dropout:
            out.append("")
            continue
        # no draw at noise 0: the same captions as runs made before this option existed
        scene = mislabel(scenes[i], rng) if noise and rng.random() < noise else scenes[i]
        out.append(describe(scene, rng)[0])
    return out


def train(cfg: TeacherTrainConfig, log=print) -> dict:
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    images, scenes = render_dataset(cfg.dataset, cfg.seed, "train")
    x_all = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1).to(device)  # (N, 3, H, W)
    log(f"rendered {len(scenes)} scenes in {time.time() - t_start:.0f}s on {device}")

    family = EmbeddedFamily.load(Path(cfg.init)) if cfg.init else EmbeddedFamily.new(EmbeddedConfig())
    history = json.loads((Path(cfg.init) / "lab.json").read_text()).get("history", []) if cfg.init else []
    family.denoiser.to(device).train()
    family.text_encoder.to(device).train()
    params = list(family.denoiser.parameters()) + list(family.text_encoder.parameters())
    ema = EMAModel(params, decay=cfg.ema, foreach=True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    total = {"steps": cfg.steps}

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup)
        progress = min(1.0, step / max(1, total["steps"]))
        return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(cfg.seed)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    t_loop, losses, step = time.time(), [], 0
    while step < total["steps"]:
        # 1. a batch: images, fresh captions (some dropped), logit-normal t, noise
        idx = torch.randint(0, len(scenes), (cfg.batch_size,), generator=gen)
        x0 = x_all[idx.to(device)]
        prompts = _captions(scenes, idx, step, cfg.cond_dropout, cfg.caption_noise, cfg.seed)
        t = torch.sigmoid(torch.randn(cfg.batch_size, generator=gen)).to(device)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        z_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps
        # 2. velocity loss
        with autocast:
            cond = family.encode(prompts)
            u_hat = family.velocity(z_t, t, cond)
        loss = F.mse_loss(u_hat.float(), eps - x0)
        # 3. update, EMA
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(params)
        losses.append(loss.item())
        step += 1
        if step == 10:
            t_steady = time.time()  # the first steps include one-off warm-up costs
        if step == 40 and cfg.minutes:
            per_step = (time.time() - t_steady) / 30
            total["steps"] = max(41, min(cfg.steps, int(cfg.minutes * 60 / per_step)))
            log(f"{per_step:.3f}s a step: training for {total['steps']} steps to fit {cfg.minutes} minutes")
        if step % cfg.log_every == 0 or step == total["steps"]:
            log(f"step {step}/{total['steps']} loss {sum(losses[-cfg.log_every:]) / len(losses[-cfg.log_every:]):.4f} "
                f"lr {sched.get_last_lr()[0]:.2e} {time.time() - t_loop:.0f}s")

    ema.copy_to(params)
    family.denoiser.eval().cpu().float()
    family.text_encoder.eval().cpu().float()
    seconds = time.time() - t_start
    run = {"config": asdict(cfg), "steps_run": step, "seconds": round(seconds, 1),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "final_loss": round(sum(losses[-200:]) / len(losses[-200:]), 5)}
    info = {"history": history + [run]}
    family.save(Path(cfg.out), extra=info)
    log(json.dumps(info))
    return info
