"""Training the embedded domain's networks: the teacher (`train-teacher`) and the judge (`train-judge`)."""

from __future__ import annotations

import argparse

from ..world.config import JudgeTrainConfig, TeacherTrainConfig
from .args import SEED, arg, command, int_in, number, say


# Flags left out are left out of the namespace: TeacherTrainConfig's defaults are the only ones.
@command("train-teacher", "train the embedded teacher",
         arg("--steps", type=int_in(1, 10**7)),
         arg("--minutes", type=number),
         arg("--batch-size", type=int_in(1, 65536)),
         arg("--lr", type=number),
         arg("--dataset", type=int_in(1, 10**8)),
         arg("--seed", type=SEED),
         arg("--warmup", type=int_in(0, 10**6)),
         arg("--caption-noise", type=number,
             help="fraction of training captions that misstate one attribute, as real captions do (0-1)"),
         arg("--device"),
         arg("--init", help="continue from this model directory's weights"),
         arg("--out", help="model directory (default assets/embedded-teacher)"),
         argument_default=argparse.SUPPRESS)
def train_teacher(args) -> dict:
    cfg = TeacherTrainConfig(**{k: v for k, v in vars(args).items() if k in TeacherTrainConfig.__dataclass_fields__})
    cfg.check()
    from ..train_teacher import train

    return train(cfg, log=say)


@command("train-judge", "train the judge network",
         arg("--steps", type=int_in(1, 10**7), default=3000),
         arg("--device", default="auto"),
         arg("--out", default=None, help="directory (default assets/judge)"))
def train_judge(args) -> dict:
    cfg = JudgeTrainConfig(steps=args.steps, device=args.device)
    if args.out:
        cfg.out = args.out
    from ..world.train_judge import train

    report = train(cfg, log=say)
    return {"min_accuracy": report["min_accuracy"], "accuracy": report["accuracy"]}
