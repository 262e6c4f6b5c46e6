"""Votes: check a rater's vote, record it (one per rater per battle, enforced by the database),
undo one's last vote, reveal who was on which side, export everything as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from pathlib import Path

from ..errors import UsageError
from ..store import Store
from . import settings as S
from .battles import sides

OUTCOMES = ("left", "right", "tie", "both_bad")  # left better, right better, tie, both bad
MAX_RATER = 64


def check_rater(rater: str | None) -> str:
    """The rater's name as the arena keeps it: Unicode-normalised (NFKC), case-folded, spaces
    collapsed, so that "Ana", "ANA" and "ａｎａ" are one rater. A name mixing alphabets (a Cyrillic
    letter among Latin ones, the usual look-alike) is refused. Names typed by hand are weaker than a
    sign-in (`--auth-file`): anyone can type anyone's name."""
    if rater is not None and not isinstance(rater, str):
        raise UsageError(f"rater must be a name (text), got {rater!r}")
    name = " ".join(unicodedata.normalize("NFKC", rater or "").casefold().split())
    if not name:
        raise UsageError("rater: enter your name (or sign in) before voting")
    if len(name) > MAX_RATER or not name.isprintable():
        raise UsageError(f"rater: a name of 1..{MAX_RATER} printable characters, got {len(name)} characters")
    scripts = {unicodedata.name(c, "?").split()[0] for c in name if c.isalpha()}
    if len(scripts) > 1:
        raise UsageError(f"rater: a name in one alphabet, got letters of {', '.join(sorted(scripts)).lower()}")
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
    """Withdraw the rater's last vote, before the next battle is loaded; returns its battle (to
    vote on again, and counted apart as a re-vote after a reveal) or None."""
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


def _inert(value):
    """A CSV cell a spreadsheet shows as text: one starting with =, +, -, @, a tab or a carriage
    return (a formula to Excel, LibreOffice and Sheets) gets a leading apostrophe."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


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
        w.writerows({k: _inert(v) for k, v in row.items()} for row in data)
        text = buf.getvalue()
    if out is not None:
        Path(out).write_text(text)
    return text
