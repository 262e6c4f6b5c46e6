"""Ratings from preference votes: Davidson's Bradley–Terry model with ties, fitted by maximum
likelihood with bootstrap intervals; win rates with Wilson intervals, position bias and agreement
between raters.

Davidson (1970): with strengths pi_i = exp(theta_i) and a tie parameter nu,
P(i beats j) = pi_i / D, P(tie) = nu * sqrt(pi_i * pi_j) / D, D = pi_i + pi_j + nu * sqrt(pi_i * pi_j).
A tie (and "both bad") is its own outcome, not half a win to each side: counting it as half shrinks
every rating towards the mean, and the intervals then miss the true strengths when ties are common.
Among decisive votes P(i beats j) = sigmoid(theta_i - theta_j), as in Bradley & Terry (1952), so the
ratings read on the same Elo scale, 1000 + 400 * log10(e) * theta with mean theta 0. Intervals come
from resampling the votes with replacement; rank = 1 + the number of settings whose lower bound is
above this one's upper bound; a setting with fewer than MIN_VOTES votes is marked preliminary.
Nothing here is stored: everything is recomputed from the votes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# How a vote scores for its left side: a win, a loss, or a tie (in the win rates: half of each).
LEFT_SCORE = {"left": 1.0, "right": 0.0, "tie": 0.5, "both_bad": 0.5}
ELO_SCALE = 400 / math.log(10)  # theta (natural log-odds) -> Elo points
ELO_BASE = 1000.0
Z95 = 1.959964
MIN_VOTES = 30  # below this a setting's rating is marked preliminary


@dataclass
class RatingConfig:
    n_bootstrap: int = 1000  # resamples of the votes for the intervals (0: no intervals)
    seed: int = 0  # of the resampling
    l2: float = 1e-4  # tiny ridge so a setting that won every vote still gets a finite rating
    iterations: int = 100  # Newton steps at most


def _newton(i: np.ndarray, j: np.ndarray, wins_i: np.ndarray, wins_j: np.ndarray, ties: np.ndarray, k: int,
            cfg: RatingConfig) -> np.ndarray:
    """Maximise Davidson's log-likelihood (minus l2/2 |theta, log nu|^2) for a batch of vote tallies
    at once. Per pair p of settings i < j, with d = theta_i - theta_j, lam = log nu:
    L_p = W_i d/2 - W_j d/2 + T lam - N log(e^(d/2) + e^(-d/2) + e^lam).
    wins_i, wins_j, ties: (B, P); returns theta (B, K), mean 0."""
    x = np.zeros((len(i), k))  # (P, K) incidence: +1 at i, -1 at j
    x[np.arange(len(i)), i] = 1.0
    x[np.arange(len(i)), j] = -1.0
    n = wins_i + wins_j + ties
    theta, lam = np.zeros((wins_i.shape[0], k)), np.zeros(wins_i.shape[0])
    eye = np.eye(k + 1)
    for _ in range(cfg.iterations):
        d = theta @ x.T  # (B, P)
        a, b, c = np.exp(d / 2), np.exp(-d / 2), np.exp(lam)[:, None]
        p_i, p_j, p_t = a / (a + b + c), b / (a + b + c), c / (a + b + c)
        grad = np.concatenate([((wins_i - wins_j) / 2 - n * (p_i - p_j) / 2) @ x,
                               (ties - n * p_t).sum(1, keepdims=True)], axis=1)
        grad -= cfg.l2 * np.concatenate([theta, lam[:, None]], axis=1)
        hess = np.empty((len(lam), k + 1, k + 1))  # minus the Hessian
        hess[:, :k, :k] = np.einsum("pk,bp,pl->bkl", x, n / 4 * ((p_i + p_j) - (p_i - p_j) ** 2), x)
        hess[:, :k, k] = hess[:, k, :k] = -(n * p_t * (p_i - p_j) / 2) @ x
        hess[:, k, k] = (n * p_t * (1 - p_t)).sum(1)
        step = np.linalg.solve(hess + cfg.l2 * eye, grad[..., None])[..., 0]
        step = np.clip(step, -4.0, 4.0)  # keeps Newton steady while a nearly separable tally runs off
        theta += step[:, :k]
        lam += step[:, k]
        if np.abs(step).max() < 1e-9:
            break
    return theta - theta.mean(axis=1, keepdims=True)


def _tally(votes: list[tuple[str, str, float]], models: list[str]):
    """Votes (left, right, left score) -> per unordered pair of models: cells of (pair, score)."""
    index = {m: t for t, m in enumerate(models)}
    cells: dict[tuple[int, int, float], int] = {}
    for left, right, score in votes:
        a, b = index[left], index[right]
        if a > b:
            a, b, score = b, a, 1.0 - score
        cells[(a, b, score)] = cells.get((a, b, score), 0) + 1
    pairs = sorted({(a, b) for a, b, _ in cells})
    pair_index = {p: t for t, p in enumerate(pairs)}
    keys = list(cells)
    counts = np.array([cells[c] for c in keys], dtype=float)
    cell_pair = np.array([pair_index[(a, b)] for a, b, _ in keys], dtype=int)
    cell_score = np.array([s for _, _, s in keys])
    i = np.array([p[0] for p in pairs], dtype=int)
    j = np.array([p[1] for p in pairs], dtype=int)
    return i, j, counts, cell_pair, cell_score, len(pairs)


def _pair_outcomes(counts: np.ndarray, cell_pair: np.ndarray, cell_score: np.ndarray, n_pairs: int):
    """(B, C) cell counts -> (B, P) wins of the lower-index setting, wins of the other, and ties."""
    onehot = np.zeros((len(cell_pair), n_pairs))
    onehot[np.arange(len(cell_pair)), cell_pair] = 1.0
    return tuple((counts * (cell_score == s)) @ onehot for s in (1.0, 0.0, 0.5))


def ratings(votes: list[tuple[str, str, float]], cfg: RatingConfig | None = None) -> list[dict]:
    """Ratings of every setting in the votes (each vote: left, right, left's score in {1, 0.5, 0},
    0.5 a tie). Returns rows sorted best first: model, rating, lower, upper, rank, votes, preliminary."""
    cfg = cfg or RatingConfig()
    models = sorted({m for v in votes for m in v[:2]})
    if not models:
        return []
    n_votes = {m: 0 for m in models}
    for left, right, _ in votes:
        n_votes[left] += 1
        n_votes[right] += 1
    if len(models) == 1:
        return [{"model": models[0], "rating": ELO_BASE, "lower": ELO_BASE, "upper": ELO_BASE, "rank": 1,
                 "votes": len(votes), "preliminary": len(votes) < MIN_VOTES}]
    i, j, counts, cell_pair, cell_score, n_pairs = _tally(votes, models)
    theta = _newton(i, j, *_pair_outcomes(counts[None], cell_pair, cell_score, n_pairs), len(models), cfg)[0]
    lower, upper = theta.copy(), theta.copy()
    if cfg.n_bootstrap > 0:
        rng = np.random.default_rng(cfg.seed)
        total = int(counts.sum())
        boot = rng.multinomial(total, counts / total, size=cfg.n_bootstrap).astype(float)  # (B, C)
        thetas = [_newton(i, j, *_pair_outcomes(boot[start : start + 250], cell_pair, cell_score, n_pairs),
                          len(models), cfg)
                  for start in range(0, cfg.n_bootstrap, 250)]  # bounded memory for the (B, K, K) Hessians
        thetas = np.concatenate(thetas)
        lower, upper = np.percentile(thetas, 2.5, axis=0), np.percentile(thetas, 97.5, axis=0)
    elo = lambda t: ELO_BASE + ELO_SCALE * float(t)  # noqa: E731
    rows = [{"model": m, "rating": elo(theta[t]), "lower": elo(lower[t]), "upper": elo(upper[t]),
             "votes": n_votes[m], "preliminary": n_votes[m] < MIN_VOTES} for t, m in enumerate(models)]
    for r in rows:
        r["rank"] = 1 + sum(o["lower"] > r["upper"] for o in rows)
    return sorted(rows, key=lambda r: (-r["rating"], r["model"]))


# -- win rates, position bias, agreement -------------------------------------------------------------
def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (a tie counted as half a success)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def win_rate(votes: list[tuple[str, str, float]], model: str, opponent: str) -> dict:
    """How often `model` beat `opponent` in their head-to-head votes (ties half), with a 95% interval."""
    score, n, ties = 0.0, 0, 0
    for left, right, s in votes:
        if {left, right} != {model, opponent}:
            continue
        n += 1
        mine = s if left == model else 1.0 - s
        score += mine
        ties += s == 0.5
    lo, hi = wilson(score, n)
    return {"model": model, "opponent": opponent, "votes": n, "ties": ties,
            "win_rate": score / n if n else float("nan"), "lower": lo, "upper": hi}


def position_bias(outcomes: list[str]) -> dict:
    """How often the left image wins among decisive votes (0.5 = no bias), with a 95% interval."""
    left = sum(o == "left" for o in outcomes)
    right = sum(o == "right" for o in outcomes)
    n = left + right
    lo, hi = wilson(left, n)
    return {"votes": len(outcomes), "decisive": n, "left_wins": left / n if n else float("nan"),
            "lower": lo, "upper": hi, "tie_rate": (len(outcomes) - n) / len(outcomes) if outcomes else float("nan")}


def agreement(ratings_by_item: dict, categories: tuple[str, ...]) -> dict:
    """Agreement on items that several raters rated: the share of rater pairs that gave the same
    answer, and Fleiss' kappa (Fleiss 1971, with a varying number of raters per item: per-item
    agreement averaged, chance agreement from the pooled answer shares)."""
    items = [list(v) for v in ratings_by_item.values() if len(v) >= 2]
    if not items:
        return {"items": 0, "pairs": 0, "agreement": float("nan"), "kappa": float("nan")}
    per_item, same, pairs, pooled = [], 0, 0, {c: 0 for c in categories}
    for answers in items:
        n = len(answers)
        counts = [answers.count(c) for c in categories]
        s = sum(c * (c - 1) for c in counts)
        same += s
        pairs += n * (n - 1)
        per_item.append(s / (n * (n - 1)))
        for c, k in zip(categories, counts):
            pooled[c] += k
    total = sum(pooled.values())
    p_e = sum((k / total) ** 2 for k in pooled.values())
    p_bar = float(np.mean(per_item))
    kappa = (p_bar - p_e) / (1 - p_e) if p_e < 1 else float("nan")
    return {"items": len(items), "pairs": pairs // 2, "agreement": same / pairs, "kappa": kappa}
