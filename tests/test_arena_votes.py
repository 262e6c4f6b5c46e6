"""Votes in SQLite: one per rater per battle (the database enforces it), bad input refused with
nothing written, undo, export, and no lost or doubled votes under many threads."""

import csv
import io
import json
import sqlite3
import threading

import pytest
from arena_load import seed_battles
from helpers import cast

from engine.arena import settings as S
from engine.arena import votes
from engine.errors import UsageError
from engine.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    seed_battles(s, 6)
    return s


def snapshot(s: Store):
    return (s.votes(), list(s.db["vote_undos"].rows))


def test_a_vote_records_battle_rater_sides_outcome_and_time(store):
    b = store.battles()[0]
    row = cast(store, b, "  alice ", "left")
    assert row["battle_id"] == b["id"] and row["rater"] == "alice" and row["outcome"] == "left"
    left = b["a_setting"] if b["left_side"] == "a" else b["b_setting"]
    right = b["b_setting"] if b["left_side"] == "a" else b["a_setting"]
    assert (row["left_setting"], row["right_setting"]) == (left, right)
    assert row["created"] and row["after_undo"] == 0


@pytest.mark.parametrize("token, rater, outcome, message", [
    ("no-such-token", "alice", "left", "no such battle"),
    (None, "alice", "left", "no such battle"),
    ("FIRST", "alice", "left", "already voted"),  # a second vote
    ("FIRST", "bob", "left better", "outcome must be one of left, right, tie, both_bad"),
    ("FIRST", "bob", "", "outcome must be one of"),
    ("FIRST", "", "left", "rater"),
    ("FIRST", "   ", "tie", "rater"),
    ("FIRST", "x" * 65, "tie", "rater"),
    ("FIRST", "carol", "left", "this battle was not shown to rater 'carol'"),  # a token from someone else
])
def test_bad_votes_are_refused_and_change_nothing(store, token, rater, outcome, message):
    battle = store.battles()[0]
    first = battle["token"]
    cast(store, battle, "alice", "right")
    store.serve(battle["id"], "bob")  # bob has it on screen too
    before = snapshot(store)
    with pytest.raises(UsageError, match=message):
        votes.cast(store, first if token == "FIRST" else token, rater, outcome)
    assert snapshot(store) == before
    assert store.votes()[0]["outcome"] == "right"  # the first vote stands unchanged


def test_the_database_itself_refuses_a_second_vote_and_a_bad_outcome(store):
    b = store.battles()[0]
    store.serve(b["id"], "alice")
    store.record_vote(b["id"], "alice", "tie")
    with pytest.raises(sqlite3.IntegrityError):
        with store.db.conn:
            store.db.execute("INSERT INTO votes (battle_id, rater, left_setting, right_setting, outcome, created) "
                             "VALUES (?, 'alice', 'x', 'y', 'left', 'now')", [b["id"]])
    with pytest.raises(sqlite3.IntegrityError):
        with store.db.conn:
            store.db.execute("INSERT INTO votes (battle_id, rater, left_setting, right_setting, outcome, created) "
                             "VALUES (?, 'bob', 'x', 'y', 'great', 'now')", [b["id"]])
    assert store.vote_count() == 1


def test_undo_withdraws_only_ones_own_last_vote_and_flags_the_revote(store):
    bs = store.battles()
    cast(store, bs[0], "alice", "left")
    cast(store, bs[1], "alice", "right")
    cast(store, bs[2], "bob", "tie")
    back = votes.undo(store, "alice")
    assert back["id"] == bs[1]["id"]
    assert sorted((v["rater"], v["battle_id"]) for v in store.votes()) == [("alice", bs[0]["id"]), ("bob", bs[2]["id"])]
    assert store.undo_count() == 1
    again = cast(store, bs[1], "alice", "left")  # allowed again, and marked
    assert again["after_undo"] == 1
    assert votes.undo(store, "carol") is None
    with pytest.raises(UsageError, match="rater"):
        votes.undo(store, "")


def test_reveal_names_each_side(store):
    b = store.battles()[0]
    shown = votes.reveal(b, "left")
    left = b["a_setting"] if b["left_side"] == "a" else b["b_setting"]
    assert shown["left"] == S.label(left) and shown["winner"] == shown["left"]
    assert "steps" in shown["left"] and "guidance" in shown["right"]


def test_export_csv_and_json_hold_every_vote(store, tmp_path):
    bs = store.battles()
    cast(store, bs[0], "alice", "left")
    cast(store, bs[1], "bob", "both_bad")
    rows = list(csv.DictReader(io.StringIO(votes.export(store, "csv", tmp_path / "v.csv"))))
    assert [r["rater"] for r in rows] == ["alice", "bob"]
    assert rows[0]["winner"] == rows[0]["left"] and rows[1]["winner"] == ""
    assert json.loads(rows[0]["left_setting"])["model"] == "embedded"
    votes.export(store, "json", tmp_path / "v.json")
    data = json.loads((tmp_path / "v.json").read_text())
    assert [d["outcome"] for d in data] == ["left", "both_bad"] and data[0]["prompt"] == bs[0]["prompt"]
    with pytest.raises(UsageError, match="format must be csv or json"):
        votes.export(store, "xml")


def test_many_threads_no_lost_or_doubled_votes(tmp_path):
    store = Store(tmp_path)
    battles = seed_battles(store, 10)
    errors, refused = [], []

    def rater(i):
        for b in battles:
            for _ in range(2):  # every vote sent twice, racing the other threads' writes
                try:
                    cast(store, b, f"r{i}", "left")
                except UsageError as e:
                    refused.append(str(e))
                except Exception as e:
                    errors.append(e)

    threads = [threading.Thread(target=rater, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.vote_count() == 8 * 10 and len(refused) == 8 * 10
    assert all("already voted" in m for m in refused)


def test_typed_names_are_one_rater_however_written_and_look_alikes_are_refused(store):
    assert votes.check_rater("  V-Twice ") == votes.check_rater("v-twice") == votes.check_rater("Ｖ－ＴＷＩＣＥ")
    assert votes.check_rater("Ana  Lima") == "ana lima" and votes.check_rater("Ольга") == "ольга"
    with pytest.raises(UsageError, match="one alphabet, got letters of cyrillic, latin"):
        votes.check_rater("v-tw\u0456ce")  # a Cyrillic i among Latin letters
    b = store.battles()[0]
    cast(store, b, "V-Twice", "left")
    with pytest.raises(UsageError, match="already voted"):
        cast(store, b, "v-twice", "right")  # the same rater, written otherwise
    assert [v["rater"] for v in store.votes()] == ["v-twice"]


def test_a_csv_export_holds_no_formula(store, tmp_path):
    for i, rater in enumerate(["=HYPERLINK(\"http://x\")", "+1", "-2", "@sum", "plain"]):
        cast(store, store.battles()[i], rater, "left")
    rows = list(csv.DictReader(io.StringIO(votes.export(store, "csv"))))
    assert [r["rater"] for r in rows] == ["'=hyperlink(\"http://x\")", "'+1", "'-2", "'@sum", "plain"]
    assert json.loads(votes.export(store, "json"))[1]["rater"] == "+1"  # JSON keeps the value as it is


def test_concurrent_undos_write_exactly_the_audit_rows_of_the_votes_they_removed(store):
    """The undo reads the last vote inside its write transaction: of 12 undos at once for a rater
    with 3 votes, one removes the last vote and writes its one audit row; the other 11 find that
    vote gone and an earlier one, which may not be undone, and change nothing."""
    for b in store.battles()[:3]:
        cast(store, b, "quinn", "left")
    undone, refused, errors = [], [], []

    def undo():
        try:
            undone.append(votes.undo(store, "quinn"))
        except UsageError as e:
            refused.append(str(e))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=undo) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(refused) == 11 and all("only your last vote" in m for m in refused)
    assert [b["id"] for b in undone] == [store.battles()[2]["id"]]
    assert store.vote_count() == 2 and store.undo_count() == 1


def test_undo_only_the_last_vote_and_only_before_the_next_battle(store):
    bs = store.battles()
    cast(store, bs[0], "ruth", "left")
    cast(store, bs[1], "ruth", "right")
    store.serve(bs[2]["id"], "ruth")  # the next battle is on her screen: the vote before it stands
    before = snapshot(store)
    with pytest.raises(UsageError, match="only your last vote, before the next battle"):
        votes.undo(store, "ruth")
    assert snapshot(store) == before


def test_votes_cast_again_after_an_undo_are_counted_apart(store):
    from engine.arena import leaderboard

    bs = store.battles()
    for b in bs[:4]:
        cast(store, b, "sam", "left")
    assert votes.undo(store, "sam")["id"] == bs[3]["id"]
    cast(store, bs[3], "sam", "right")  # cast once the sides were revealed
    blind = leaderboard.leaderboard(store, leaderboard.LeaderboardConfig(n_bootstrap=0))
    every = leaderboard.leaderboard(store, leaderboard.LeaderboardConfig(n_bootstrap=0, include_revotes=True))
    assert (blind["votes"], every["votes"]) == (3, 4) and blind["revotes_after_undo"] == 1
    assert "Re-votes after an undo (cast once the sides were revealed): 1, not counted." in leaderboard.summary(blind)


def test_the_counts_the_next_battle_reads_follow_every_vote_and_undo(store):
    """Kept by triggers (votes and undos through any path, raw SQL included) and equal to a count
    from scratch."""
    from engine.arena import battles

    def recount():
        per_battle = {r["id"]: r["n"] for r in store.db.query(
            "SELECT b.id, count(v.id) AS n FROM battles b LEFT JOIN votes v ON v.battle_id = b.id GROUP BY b.id")}
        per_pair = {r["pair"]: (r["nb"], r["nv"]) for r in store.db.query(
            "SELECT pair, count(*) AS nb, sum(n_votes) AS nv FROM battles GROUP BY pair")}
        return per_battle, per_pair

    def kept():
        return ({r["id"]: r["n_votes"] for r in store.db.query("SELECT id, n_votes FROM battles")},
                {r["pair"]: (r["n_battles"], r["n_votes"]) for r in store.db.query("SELECT * FROM comparisons")})

    for rater in ("ann", "ben", "cat"):
        for _ in range(4):
            cast(store, battles.next_battle(store, rater), rater, "tie")
    assert kept() == recount() and sorted(n for _, n in kept()[1].values()) == [6, 6]  # even over comparisons
    votes.undo(store, "cat")
    store.db.execute("DELETE FROM votes WHERE rater = 'ben' AND id = (SELECT min(id) FROM votes WHERE rater = 'ben')")
    assert store.vote_count() == 10 and kept() == recount()
    assert store.rater_progress("ann") == (4, 6) and store.rater_progress("nobody") == (0, 6)
