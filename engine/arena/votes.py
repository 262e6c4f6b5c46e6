"""Votes: check a rater's vote, record it (one per rater per battle, enforced by the database),
undo one's last vote, reveal who was on which side, export everything as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import UsageError
from ..store import Store
from . import settings as S
from .battles import sides

OUTCOMES = ("left", "right", "tie", "both_bad")  # left better, right better, tie, both bad
MAX_RATER = 64


def check_rater(rater: str | None) -> str:
    """The rater's name, trimmed; refuses an empty, overlong or non-printable one."""
    name = (rater or "").strip() if isinstance(rater, str) or rater is None else None
    if name is None:
        raise UsageError(f"rater must be a name (text), got {rater!r}")
    if not name:
        raise UsageError("rater: enter your name (or sign in) before voting")
    if len(name) > MAX_RATER or not name.isprintable():
        raise UsageError(f"rater: a name of 1..{MAX_RATER} printable characters, got {len(name)} characters")
    return name


def check_outcome(outcome: str | None) -> str:
    if outcome not in OUTCOMES:
        raise UsageError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    return outcome


def cast(store: Store, token: str, rater: str, outcome: str) -> dict:
    """Record one vote on the battle with this opaque token; returns the vote row with, under
    `reveal`, who was on which side. Bad input (unknown battle, second vote, unknown outcome, empty
    rater) raises UsageError and writes nothing."""
    rater = check_rater(rater)
    outcome = check_outcome(outcome)
    battle = store.battle_by_token(token) if isinstance(token, str) and token else None
    if battle is None:
        raise UsageError("battle: no such battle; load the next one")
    return {**store.record_vote(battle["id"], rater, outcome), "reveal": reveal(battle, outcome)}


def undo(store: Store, rater: str) -> dict | None:
    """Withdraw the rater's most recent vote; returns its battle (to vote on again) or None."""
    vote = store.undo_last_vote(check_rater(rater))
    return store.battle(vote["battle_id"]) if vote else None


def reveal(battle: dict, outcome: str | None = None) -> dict:
    """Who was on which side (labels people read), and what the vote said."""
    left, right = sides(battle)
    out = {"left": S.label(left), "right": S.label(right), "prompt": battle["prompt"], "seed": battle["seed"]}
    if outcome is not None:
        out["outcome"] = outcome
        out["winner"] = {"left": out["left"], "right": out["right"]}.get(outcome)
    return out


# -- export -----------------------------------------------------------------------------------------
EXPORT_COLUMNS = ["vote", "battle", "prompt", "seed", "category", "rater", "left", "right", "outcome", "winner",
                  "left_setting", "right_setting", "after_undo", "created"]


def rows(store: Store) -> list[dict]:
    """One flat row per vote: the labels and the full settings on each side."""
    out = []
    for v in store.votes():
        left, right = S.label(v["left_setting"]), S.label(v["right_setting"])
        out.append({"vote": v["id"], "battle": v["battle"], "prompt": v["prompt"], "seed": v["seed"],
                    "category": v["category"], "rater": v["rater"], "left": left, "right": right,
                    "outcome": v["outcome"], "winner": {"left": left, "right": right}.get(v["outcome"], ""),
                    "left_setting": v["left_setting"], "right_setting": v["right_setting"],
                    "after_undo": bool(v["after_undo"]), "created": v["created"]})
    return out


def export(store: Store, fmt: str, out: str | Path | None = None) -> str:
    """The votes as CSV or JSON text (written to `out` when given)."""
    if fmt not in ("csv", "json"):
        raise UsageError(f"format must be csv or json, got {fmt!r}")
    data = rows(store)
    if fmt == "json":
        text = json.dumps(data, indent=1) + "\n"
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(data)
        text = buf.getvalue()
    if out is not None:
        Path(out).write_text(text)
    return text
