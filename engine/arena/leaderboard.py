"""The leaderboard, recomputed from the votes every time: ratings (Davidson's Bradley–Terry with
ties) with intervals,
each student's win rate against its teacher (overall and per golden-set category), position bias
and agreement between raters. `markdown` prints it for the command line."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import registry
from ..store import Store
from . import settings as S
from .ratings import LEFT_SCORE, MIN_VOTES, RatingConfig, agreement, position_bias, ratings, win_rate
from .votes import OUTCOMES


@dataclass
class LeaderboardConfig:
    n_bootstrap: int = 1000  # resamples for the rating intervals
    seed: int = 0  # of the resampling
    category: str | None = None  # only votes on prompts of this golden-set category
    include_revotes: bool = False  # count votes cast again after an undo (the rater had seen the reveal)


def _triples(votes: list[dict]) -> list[tuple[str, str, float]]:
    return [(v["left_setting"], v["right_setting"], LEFT_SCORE[v["outcome"]]) for v in votes]


def student_vs_teacher(store: Store, votes: list[dict]) -> list[dict]:
    """For every compared pair where one setting is the other's teacher (see settings.teacher_of):
    the student's win rate (ties half) with a 95% Wilson interval, overall and per category."""
    pairs = {tuple(sorted((v["a_setting"], v["b_setting"]))) for v in votes}
    lineage: dict[str, list[str]] = {}
    rows = []
    for x, y in sorted(pairs):
        sx, sy = S.from_key(x), S.from_key(y)
        for m in (sx["model"], sy["model"]):
            if m not in lineage:
                lineage[m] = registry.lineage(store, m)[-2::-1]  # its ancestors, parent first
        t = S.teacher_of(sx, sy, lineage)
        if t is None:
            continue
        teacher, student = (x, y) if t == 0 else (y, x)
        categories = sorted({v["category"] or "" for v in votes})
        for cat in [None, *categories]:
            subset = votes if cat is None else [v for v in votes if (v["category"] or "") == cat]
            r = win_rate(_triples(subset), student, teacher)
            if r["votes"] == 0:
                continue
            rows.append({"student": S.label(student), "teacher": S.label(teacher),
                         "category": "all" if cat is None else (cat or "-"), **{k: r[k] for k in
                         ("votes", "ties", "win_rate", "lower", "upper")}})
    return rows


def leaderboard(store: Store, cfg: LeaderboardConfig | None = None) -> dict:
    cfg = cfg or LeaderboardConfig()
    votes = store.votes()
    if cfg.category is not None:
        votes = [v for v in votes if v["category"] == cfg.category]
    revotes = sum(bool(v["after_undo"]) for v in votes)
    if not cfg.include_revotes:  # cast after the reveal: not blind any more
        votes = [v for v in votes if not v["after_undo"]]
    rows = ratings(_triples(votes), RatingConfig(n_bootstrap=cfg.n_bootstrap, seed=cfg.seed))
    for r in rows:
        r["setting"] = S.label(r.pop("model"))
    by_battle: dict[int, list[str]] = {}
    for v in votes:
        by_battle.setdefault(v["battle_id"], []).append(v["outcome"])
    return {"votes": len(votes), "raters": len({v["rater"] for v in votes}),
            "battles": len(by_battle), "category": cfg.category, "ratings": rows,
            "student_vs_teacher": student_vs_teacher(store, votes),
            "position_bias": position_bias([v["outcome"] for v in votes]),
            "agreement": agreement(by_battle, OUTCOMES),
            "revotes_after_undo": revotes, "revotes_counted": cfg.include_revotes}


RATING_COLUMNS = ["rank", "setting", "rating", "95% interval", "votes", "note"]
WIN_COLUMNS = ["student", "teacher", "category", "win rate", "95% interval", "votes", "ties"]


def _num(x: float, fmt: str = ".0f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def rating_table(board: dict) -> list[list]:
    return [[r["rank"], r["setting"], _num(r["rating"]), f"{_num(r['lower'])} – {_num(r['upper'])}", r["votes"],
             f"preliminary: under {MIN_VOTES} votes" if r["preliminary"] else ""] for r in board["ratings"]]


def win_table(board: dict) -> list[list]:
    return [[r["student"], r["teacher"], r["category"], _num(r["win_rate"], ".2f"),
             f"{_num(r['lower'], '.2f')} – {_num(r['upper'], '.2f')}", r["votes"], r["ties"]]
            for r in board["student_vs_teacher"]]


def summary(board: dict) -> str:
    pb, ag = board["position_bias"], board["agreement"]
    return (f"{board['votes']} votes by {board['raters']} raters on {board['battles']} battles"
            + (f" (category {board['category']})" if board["category"] else "") + ".  \n"
            f"Position bias: the left image won {_num(pb['left_wins'], '.2f')} of {pb['decisive']} decisive votes "
            f"(95% {_num(pb['lower'], '.2f')} – {_num(pb['upper'], '.2f')}; 0.50 = no bias); "
            f"ties or both bad: {_num(pb['tie_rate'], '.2f')}.  \n"
            f"Rater agreement on {ag['items']} battles rated by several raters ({ag['pairs']} rater pairs): "
            f"{_num(ag['agreement'], '.2f')}, Fleiss' kappa {_num(ag['kappa'], '.2f')}.  \n"
            f"Re-votes after an undo (cast once the sides were revealed): {board['revotes_after_undo']}, "
            f"{'counted' if board['revotes_counted'] else 'not counted'}.")


def _md_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(board: dict) -> str:
    return "\n".join([
        "## Ratings (Bradley–Terry with ties, Davidson 1970; bootstrap 95% intervals)", "",
        _md_table(RATING_COLUMNS, rating_table(board)), "",
        "## Students against their teachers", "", _md_table(WIN_COLUMNS, win_table(board)), "",
        summary(board)])
