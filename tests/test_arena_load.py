"""Many raters at once: concurrent gradio_client clients voting through the served arena.

The full run (20 clients, 1,000 votes) is `python scripts/arena_load.py`, whose figures are in
docs/arena.md; this is the same harness at 12 clients and 60 votes so the suite stays fast on two cores."""

from arena_load import load_test


def test_concurrent_raters_record_exactly_their_votes_and_no_duplicate():
    r = load_test(clients=12, votes=60, dup_every=5)
    assert r["errors"] == 0, r["error_samples"]
    assert r["votes_accepted"] == 60
    assert r["rows_in_database"] == 60 == r["distinct_battle_rater_pairs"]
    assert r["duplicates_sent"] == 12 == r["duplicates_refused"]
