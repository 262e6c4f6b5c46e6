"""Many raters at once: concurrent clients voting through the served arena's REST API.

The full run (20 clients, 1,000 votes, the arena as `python -m app --arena-only` serves it) is
`python scripts/arena_load.py`, whose figures are in docs/arena.md; this drives the same raters
(`run_load`) at 8 clients and 48 votes against an arena served from this process, so the suite
stays fast on two cores."""

from arena_load import run_load, seed_battles
from helpers import serve

from app.blocks import build_arena_app
from app.state import Lab
from engine.store import Store


def test_concurrent_raters_record_exactly_their_votes_and_no_duplicate(tmp_path):
    store = Store(tmp_path)
    seed_battles(store, 6)  # each rater votes on every battle
    demo = build_arena_app(Lab(store))
    try:
        r = run_load(serve(demo), clients=8, votes_per_client=6, dup_every=4)
    finally:
        demo.close()
    assert r["errors"] == 0, r["error_samples"]
    assert r["votes_accepted"] == 48
    assert store.vote_count() == 48 == len({(v["battle_id"], v["rater"]) for v in store.votes()})
    assert r["duplicates_sent"] == 8 == r["duplicates_refused"]  # one in four of each rater's six votes
