"""A model setting: what one side of a battle is (model name, steps, guidance, and any later key
such as `cache` or `fp8`), kept as a JSON dict so new generation options slot in unchanged.

Two settings are the same competitor exactly when their canonical JSON (`key`) is equal.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from ..errors import UsageError
from ..request import MAX_STEPS, Request, check_guidance

DEFAULTS = {"steps": 50, "guidance": 5.0}


def normalize(setting: dict, models: list[str] | None = None) -> dict:
    """A checked copy: `model` a known name, `steps` an int, `guidance` a float; other keys kept
    as given (generation checks them). Raises UsageError naming the bad field."""
    if not isinstance(setting, dict):
        raise UsageError(f"a setting must be a mapping with at least 'model', got {setting!r}")
    out = {**DEFAULTS, **setting}
    model = out.get("model")
    if not isinstance(model, str) or not model.strip():
        raise UsageError("setting: model must be a non-empty model name")
    if models is not None and model not in models:
        raise UsageError(f"setting: model {model!r} is not known; use one of: {', '.join(models)}")
    try:
        steps = int(out["steps"])
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"setting: steps must be an integer in 1..{MAX_STEPS}, got {out['steps']!r}") from None
    if steps != out["steps"] or not 1 <= steps <= MAX_STEPS:
        raise UsageError(f"setting: steps must be an integer in 1..{MAX_STEPS}, got {out['steps']!r}")
    try:
        guidance = float(out["guidance"])
    except (TypeError, ValueError):
        guidance = math.nan
    check_guidance(guidance, "setting: guidance")
    out.update(model=model.strip(), steps=steps, guidance=guidance)
    # A generation option left at its default is the same competitor as one not given at all.
    for k, default in _request_defaults().items():
        if k in out and out[k] == default:
            del out[k]
    for k, v in out.items():
        if not isinstance(k, str) or not k:
            raise UsageError(f"setting: keys must be non-empty names, got {k!r}")
        if v is not None and not isinstance(v, (str, int, float, bool)):
            raise UsageError(f"setting: {k} must be a plain value (text, number, true/false), got {v!r}")
    return out


def key(setting: dict) -> str:
    """The canonical JSON of a setting: equal keys, same competitor."""
    return json.dumps(setting, sort_keys=True, separators=(",", ":"))


def from_key(text: str) -> dict:
    return json.loads(text)


def label(setting: dict | str) -> str:
    """What people read: `embedded · 50 steps · guidance 5`, then any other keys."""
    s = from_key(setting) if isinstance(setting, str) else setting
    parts = [str(s["model"]), f"{s['steps']} steps", f"guidance {float(s['guidance']):g}"]
    parts += [f"{k} {v}" for k, v in sorted(s.items()) if k not in ("model", "steps", "guidance") and v is not None]
    return " · ".join(parts)


def parse(text: str) -> dict:
    """The command line's form: `MODEL[,steps=N][,guidance=G][,KEY=VALUE...]`, or a JSON object."""
    text = (text or "").strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError as e:
            raise UsageError(f"--setting: not valid JSON ({e})") from None
    model, *rest = [p.strip() for p in text.split(",")]
    out: dict = {"model": model}
    for part in rest:
        k, eq, v = part.partition("=")
        if not eq or not k.strip():
            raise UsageError(f"--setting: expected KEY=VALUE after the model name, got {part!r}")
        out[k.strip()] = _value(v.strip())
    return out


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def teacher_of(a: dict, b: dict, lineage: dict[str, list[str]]) -> int | None:
    """Which of two settings is the other's teacher: 0 or 1, or None when neither is.

    A setting's teacher is one whose model is an ancestor of its model in the registry's lineage;
    for the same model, the one that spends at least as much on every axis (as many steps or more,
    guidance on where the other has it off) and more on one is the reference the other is measured
    against. Two settings of one model that trade steps for guidance have no teacher between them."""
    ma, mb = a["model"], b["model"]
    if ma != mb:
        if ma in lineage.get(mb, []):
            return 0
        if mb in lineage.get(ma, []):
            return 1
        return None
    cost_a = (a["steps"], float(a["guidance"]) != 1.0)
    cost_b = (b["steps"], float(b["guidance"]) != 1.0)
    if cost_a == cost_b:
        return None
    if all(x >= y for x, y in zip(cost_a, cost_b)):
        return 0
    if all(y >= x for x, y in zip(cost_a, cost_b)):
        return 1
    return None


def _request_defaults() -> dict:
    """Defaults of the generation options beyond model, steps and guidance (engine.request.Request)."""
    return {f.name: f.default for f in dataclasses.fields(Request)
            if f.name not in ("prompt", "seed", "steps", "guidance") and f.default is not dataclasses.MISSING}


MAX_BATTLES = 10_000


@dataclass
class PrepareConfig:
    n: int = 100  # battles to prepare
    pairs: str = "first"  # "first": the first setting against each other one; "all": every pair
    batch_size: int = 16  # images generated per forward batch
    device: str = "auto"  # where the models run
    source: str = "golden"  # where the prompts came from: a golden-set name, "world" or "admin"

    def check(self, n_settings: int) -> None:
        if not isinstance(self.n, int) or not 1 <= self.n <= MAX_BATTLES:
            raise UsageError(f"n must be an integer in 1..{MAX_BATTLES}, got {self.n!r}")
        if self.pairs not in ("first", "all"):
            raise UsageError(f"pairs must be 'first' or 'all', got {self.pairs!r}")
        if n_settings < 2:
            raise UsageError(f"a battle needs at least two settings, got {n_settings}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer, got {self.batch_size!r}")
