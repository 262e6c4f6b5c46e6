"""Many raters at once: concurrent gradio_client clients voting through the served arena.

The full run (20 clients, 1,000 votes) is `python scripts/arena_load.py`, whose figures are in
docs/arena.md; this is the same harness at 8 clients and 48 votes so the suite stays fast on two cores."""

from arena_load import load_test


def test_concurrent_raters_record_exactly_their_votes_and_no_duplicate():
    r = load_test(clients=8, votes=48, dup_every=4)
    assert r["errors"] == 0, r["error_samples"]
    assert r["votes_accepted"] == 48
    assert r["rows_in_database"] == 48 == r["distinct_battle_rater_pairs"]
    assert r["duplicates_sent"] == 8 == r["duplicates_refused"]  # one in four of each rater's six votes
