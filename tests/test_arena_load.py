"""Many raters at once: 20 concurrent gradio_client clients voting through the served arena.

The full run (1,000 votes) is `python scripts/arena_load.py`, whose figures are in the README; this
is the same harness at 100 votes so the suite stays fast on two cores."""

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from arena_load import load_test  # noqa: E402


def test_concurrent_raters_record_exactly_their_votes_and_no_duplicate():
    r = load_test(clients=20, votes=100, dup_every=5)
    assert r["errors"] == 0, r["error_samples"]
    assert r["votes_accepted"] == 100
    assert r["rows_in_database"] == 100 == r["distinct_battle_rater_pairs"]
    assert r["duplicates_sent"] == 20 == r["duplicates_refused"]
