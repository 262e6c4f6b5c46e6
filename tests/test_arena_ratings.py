"""Ratings (Davidson's Bradley–Terry with ties), win rates, position bias and agreement against
hand computations and known truths."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from engine.arena.ratings import (
    ELO_BASE,
    ELO_SCALE,
    MIN_VOTES,
    RatingConfig,
    agreement,
    position_bias,
    ratings,
    wilson,
    win_rate,
)


def synthetic(theta: dict[str, float], n: int, seed: int, nu: float = 0.0) -> list[tuple[str, str, float]]:
    """n votes between random pairs, drawn from Davidson's model of the truth: win, loss or (with
    nu > 0) tie, as left score 1, 0 or 0.5."""
    rng = np.random.default_rng(seed)
    names = list(theta)
    out = []
    for _ in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        d = theta[names[a]] - theta[names[b]]
        win, loss, tie = math.exp(d / 2), math.exp(-d / 2), nu
        u = rng.random() * (win + loss + tie)
        out.append((names[a], names[b], 1.0 if u < win else 0.0 if u < win + loss else 0.5))
    return out


def scipy_mle(votes, models, l2=1e-4):
    """An independent fit: the same penalised likelihood (theta and log nu), minimised by BFGS."""
    idx = {m: i for i, m in enumerate(models)}

    def nll(params):
        t, lam = params[:-1], params[-1]
        s = 0.0
        for left, right, score in votes:
            d = t[idx[left]] - t[idx[right]]
            log_d = np.logaddexp(np.logaddexp(d / 2, -d / 2), lam)
            s -= {1.0: d / 2, 0.0: -d / 2, 0.5: lam}[score] - log_d
        return s + l2 / 2 * (params @ params)

    t = minimize(nll, np.zeros(len(models) + 1), method="BFGS", options={"gtol": 1e-9}).x[:-1]
    return t - t.mean()


def test_fit_matches_an_independent_maximum_likelihood():
    votes = synthetic({"a": 0.8, "b": 0.0, "c": -0.5}, 300, seed=3, nu=0.5)
    rows = {r["model"]: r for r in ratings(votes, RatingConfig(n_bootstrap=0))}
    ref = scipy_mle(votes, ["a", "b", "c"])
    for m, t in zip("abc", ref):
        assert rows[m]["rating"] == pytest.approx(ELO_BASE + ELO_SCALE * t, abs=0.05)


def test_a_tie_is_its_own_outcome_not_half_a_win():
    # 10 wins, 10 losses and 20 ties: as even as 10 wins and 10 losses, whatever the ties
    even = ratings([("a", "b", 1.0)] * 10 + [("a", "b", 0.0)] * 10 + [("a", "b", 0.5)] * 20,
                   RatingConfig(n_bootstrap=0))
    assert even[0]["rating"] == pytest.approx(even[1]["rating"]) == pytest.approx(ELO_BASE)
    # 15 wins to 5: a difference of log(3) in theta, with or without ties beside them (counted as
    # half a win each, ties would pull it towards 0)
    for ties in (0, 20):
        rows = ratings([("a", "b", 1.0)] * 15 + [("a", "b", 0.0)] * 5 + [("b", "a", 0.5)] * ties,
                       RatingConfig(n_bootstrap=0))
        assert rows[0]["rating"] - rows[1]["rating"] == pytest.approx(ELO_SCALE * math.log(3), rel=1e-3)


def test_recovers_the_order_of_known_strengths():
    truth = {"teacher": 1.2, "guidance": 0.6, "step8": 0.0, "step4": -0.7, "step2": -1.1}
    rows = ratings(synthetic(truth, 1500, seed=0, nu=0.3), RatingConfig(n_bootstrap=200))
    assert [r["model"] for r in rows] == sorted(truth, key=lambda m: -truth[m])
    assert rows[0]["rank"] == 1 and rows[-1]["rank"] == len(truth)
    for r in rows:
        assert r["lower"] <= r["rating"] <= r["upper"]
        assert r["votes"] > 0 and not r["preliminary"]


@pytest.mark.parametrize("nu", [0.0, 0.55])  # no ties; about 20% ties
def test_bootstrap_intervals_cover_the_truth_in_most_trials(nu):
    truth = {"a": 0.9, "b": 0.3, "c": -0.2, "d": -1.0}
    mean = sum(truth.values()) / len(truth)
    covered = total = ties = 0
    for trial in range(30):
        votes = synthetic(truth, 400, seed=100 + trial, nu=nu)
        ties += sum(v[2] == 0.5 for v in votes)
        for r in ratings(votes, RatingConfig(n_bootstrap=200, seed=trial)):
            true_elo = ELO_BASE + ELO_SCALE * (truth[r["model"]] - mean)
            covered += r["lower"] <= true_elo <= r["upper"]
            total += 1
    assert (ties / (30 * 400) > 0.15) == (nu > 0)
    assert covered / total >= 0.9  # nominal 95%


def test_rank_counts_models_whose_lower_bound_beats_this_upper_bound():
    votes = [("a", "b", 1.0)] * 60 + [("b", "c", 0.5)] * 60 + [("a", "c", 1.0)] * 60
    rows = {r["model"]: r for r in ratings(votes, RatingConfig(n_bootstrap=300))}
    assert rows["a"]["rank"] == 1
    assert rows["b"]["rank"] == rows["c"]["rank"] == 2  # b and c overlap: they share a rank


def test_a_model_that_won_everything_gets_a_finite_rating_marked_preliminary():
    rows = ratings([("a", "b", 1.0)] * 20, RatingConfig(n_bootstrap=50))
    assert all(math.isfinite(r["rating"]) and math.isfinite(r["upper"]) for r in rows)
    assert rows[0]["model"] == "a" and all(r["preliminary"] for r in rows)  # 20 < MIN_VOTES
    assert MIN_VOTES > 20


def test_no_votes_no_rows():
    assert ratings([]) == []


def test_wilson_interval_against_hand_computation():
    lo, hi = wilson(8, 10)
    # p = 0.8, z = 1.96: centre (0.8 + 0.192) / 1.384, half 1.96 * sqrt(0.016 + 0.0096) / 1.384
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_win_rate_counts_ties_half_from_either_side():
    votes = [("s", "t", 1.0), ("t", "s", 1.0), ("t", "s", 0.5), ("s", "t", 0.0), ("s", "x", 1.0)]
    r = win_rate(votes, "s", "t")
    assert r["votes"] == 4 and r["ties"] == 1
    assert r["win_rate"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert r["lower"] < r["win_rate"] < r["upper"]


def test_position_bias():
    pb = position_bias(["left"] * 30 + ["right"] * 10 + ["tie"] * 5 + ["both_bad"] * 5)
    assert pb["decisive"] == 40 and pb["left_wins"] == pytest.approx(0.75)
    assert pb["lower"] > 0.5  # a bias this strong is outside chance
    assert pb["tie_rate"] == pytest.approx(0.2)


def test_agreement_and_fleiss_kappa_by_hand():
    cats = ("left", "right", "tie", "both_bad")
    items = {1: ["left", "left"], 2: ["right", "left"], 3: ["tie", "tie", "tie"], 4: ["left"]}
    ag = agreement(items, cats)
    # item 4 has one rater: left out. Pairs: 1 + 1 + 3 = 5, agreeing: 1 + 0 + 3 = 4.
    assert ag["items"] == 3 and ag["pairs"] == 5 and ag["agreement"] == pytest.approx(4 / 5)
    # P_bar = mean(1, 0, 1) = 2/3; pooled shares: left 3/7, right 1/7, tie 3/7 -> P_e = 19/49
    p_e = 19 / 49
    assert ag["kappa"] == pytest.approx((2 / 3 - p_e) / (1 - p_e))
    assert math.isnan(agreement({1: ["left"]}, cats)["kappa"])
