"""Train the judge on the shapes world (`python -m engine train-judge`)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from . import judge as J
from .config import JudgeTrainConfig
from .dataset import render_dataset


def _augment(x: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    # Generated images are a little noisy and soft: show the judge some of both.
    b = x.shape[0]
    std = torch.rand(b, 1, 1, 1, generator=gen, device=x.device) * noise
    x = x + std * torch.randn(x.shape, generator=gen, device=x.device)
    soft = torch.rand(b, 1, 1, 1, generator=gen, device=x.device) < 0.3
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    x = torch.where(soft, 0.5 * x + 0.5 * blurred, x)
    return x.clamp(-1, 1)


def accuracy(judge: J.Judge, images: torch.Tensor, scenes) -> dict[str, float]:
    """Per attribute, the fraction of scenes (where it applies) the judge reads correctly."""
    preds = J.predict(judge, images)
    out = {}
    for name in J.HEADS:
        pairs = [(s.labels()[name], p[name]) for s, p in zip(scenes, preds) if name in s.labels()]
        out[name] = sum(a == b for a, b in pairs) / max(1, len(pairs))
    return out


def train(cfg: JudgeTrainConfig, log=print) -> dict:
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    imgs, scenes = render_dataset(cfg.dataset, cfg.seed, "uniform")
    x_all = J.to_tensor(imgs)
    y_all = J.labels_tensor([s.labels() for s in scenes])
    log(f"rendered {len(scenes)} training scenes in {time.time() - t0:.0f}s")
    eval_imgs, eval_scenes = render_dataset(cfg.eval_size, cfg.seed + 1_000_003, "uniform")

    model = J.Judge().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    cpu_gen = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.steps):
        idx = torch.randint(0, len(scenes), (cfg.batch_size,), generator=cpu_gen)
        x = _augment(x_all[idx].to(device), cfg.noise, gen)
        loss = J.loss(model(x), {k: v[idx].to(device) for k, v in y_all.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == cfg.steps - 1:
            log(f"step {step}/{cfg.steps} loss {loss.item():.4f}")
    model.eval()
    acc = accuracy(model, J.to_tensor(eval_imgs), eval_scenes)
    out = Path(cfg.out)
    model.cpu().save(out)
    report = {"accuracy": acc, "min_accuracy": min(acc.values()), "config": asdict(cfg),
              "seconds": round(time.time() - t0, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    log(json.dumps({"min_accuracy": report["min_accuracy"], "accuracy": acc}))
    return report
