"""The Arena and Leaderboard tabs through the app's API (gradio_client, raw HTTP): blindness before
the vote, the vote and its reveal, refusals that change nothing, undo, the signed-in rater."""

import json
import urllib.request

import pytest
from gradio_client import Client
from helpers import arena_store, assert_blind, forbidden, serve

from app.blocks import build_app, build_arena_app
from app.state import Lab


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


@pytest.fixture(scope="module")
def arena_only(tmp_path_factory, tiny_model_dir):
    store = arena_store(tmp_path_factory.mktemp("arena"), tiny_model_dir)
    demo = build_arena_app(Lab(store))
    yield serve(demo), store
    demo.close()


def test_nothing_identifying_reaches_the_browser_before_the_vote(arena_only, tiny_model_dir):
    url, store = arena_only
    words = forbidden(store, tiny_model_dir)
    for path in ("", "config", "gradio_api/info", "gradio_api/openapi.json"):
        try:
            assert_blind(get(url + path).decode(errors="replace"), words, f"/{path}")
        except urllib.error.HTTPError as e:
            assert e.code == 404, path  # an endpoint this Gradio does not serve
    client = Client(url, verbose=False, download_files=False)
    shown = client.predict("dana", api_name="/arena_next")
    assert_blind(json.dumps(shown), words, "the battle's API response")
    token, left, right = shown[0], shown[1], shown[2]
    assert token and token not in {str(b["id"]) for b in store.battles()}
    assert store.battle_by_token(token) is not None
    for image in (left, right):
        assert_blind(image["url"], words, "an image URL")
        assert_blind(get(image["url"]).decode("latin-1"), words, "the image bytes")
    # after the vote the same checks see the names: the reveal is what carries them
    reveal = client.predict(token, "dana", "right", api_name="/arena_vote")
    assert "zebra" in json.dumps(reveal) and "steps" in reveal["left"] and reveal["winner"] == reveal["right"]


def test_the_arena_tab_of_the_full_app_is_blind_too(tmp_path, tiny_model_dir):
    store = arena_store(tmp_path, tiny_model_dir, n=2)
    demo = build_app(Lab(store))
    url = serve(demo)
    try:
        client = Client(url, verbose=False, download_files=False)
        shown = client.predict("erin", api_name="/arena_next")
        assert_blind(json.dumps(shown), forbidden(store, tiny_model_dir), "the full app's battle response")
        client.predict(shown[0], "erin", "tie", api_name="/arena_vote")
        summary, ratings, wins, _ = client.predict("all categories", 100, api_name="/leaderboard")
        assert "1 votes by 1 raters" in summary and len(ratings["data"]) == 2
        assert wins["data"][0][0].startswith("zebra-student-qx") and wins["data"][0][3] == "0.50"
        exported = client.predict(api_name="/arena_export_csv")
        assert "erin" in open(exported["path"] if isinstance(exported, dict) else exported).read()
    finally:
        demo.close()


def test_vote_reveal_refusals_and_undo(arena_only):
    url, store = arena_only
    client = Client(url, verbose=False, download_files=False)
    first = client.predict("frank", api_name="/arena_next")
    token = first[0]
    assert first[3] == store.battle_by_token(token)["prompt"] and "frank" in first[5]
    client.predict(token, "frank", "left", api_name="/arena_vote")
    n = store.vote_count()
    for args, message in [((token, "frank", "right"), "already voted"),
                          (("not-a-battle", "frank", "left"), "no such battle"),
                          ((token, "gina", "better"), "outcome must be one of"),
                          ((token, "", "left"), "enter your name")]:
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name="/arena_vote")
    assert store.vote_count() == n
    assert next(v for v in store.votes() if v["rater"] == "frank")["outcome"] == "left"
    back = client.predict("frank", api_name="/arena_undo")  # before the next battle is loaded
    assert back[0] == token and "withdrawn" in back[5]
    assert store.vote_count() == n - 1
    client.predict(token, "frank", "tie", api_name="/arena_vote")
    assert next(v for v in store.votes() if v["rater"] == "frank")["after_undo"] == 1
    nxt = client.predict("frank", api_name="/arena_next")
    assert nxt[0] != token  # never the battle one has voted on
    with pytest.raises(Exception, match="only your last vote, before the next battle"):
        client.predict("frank", api_name="/arena_undo")  # that battle is on screen now: the vote stands
    assert store.vote_count() == n


def test_a_signed_in_rater_is_the_authenticated_user(tmp_path, tiny_model_dir):
    store = arena_store(tmp_path, tiny_model_dir, n=1)
    demo = build_arena_app(Lab(store))
    url = serve(demo, auth=[("ann", "secret")])
    try:
        client = Client(url, verbose=False, download_files=False, auth=("ann", "secret"))
        token = client.predict("", api_name="/arena_next")[0]  # no name typed: the login is the rater
        client.predict(token, "mallory", "left", api_name="/arena_vote")
        assert [v["rater"] for v in store.votes()] == ["ann"]
        done = client.predict("", api_name="/arena_next")
        assert done[0] == "" and done[3] == "" and "No battles left" in done[4]
    finally:
        demo.close()


def test_served_images_are_all_one_size_in_bytes_and_never_shared_between_battles(tmp_path, tiny_model_dir):
    """A rater cannot pick the plainer (or more detailed) image by its file size, nor carry one
    battle's reveal to another through a URL."""
    store = arena_store(tmp_path, tiny_model_dir, n=4)
    demo = build_arena_app(Lab(store))
    try:
        client = Client(serve(demo), verbose=False, download_files=False)
        sizes, urls = set(), []
        while (shown := client.predict("olga", api_name="/arena_next"))[0]:
            for image in (shown[1], shown[2]):
                sizes.add(len(get(image["url"])))
                urls.append(image["url"])
            client.predict(shown[0], "olga", "tie", api_name="/arena_vote")
        assert len(urls) == 8 == len(set(urls)) and len(sizes) == 1
    finally:
        demo.close()


def test_empty_states_say_what_to_do_next(tmp_path):
    """With no battles the Arena points to where they are prepared; with no votes the Leaderboard
    says how votes come, and how many battles wait."""
    from app import arena, leaderboard
    from engine.store import Store

    lab = Lab(Store(tmp_path / "d"))
    shown = arena.next_battle(lab, "ana")
    assert "No battles left" in shown[4] and "Prepare battles" in shown[4]
    text, *_ = leaderboard.refresh(lab, leaderboard.ALL, 0)
    assert text.startswith("**No votes yet** (0 battles prepared)") and "Arena" in text
