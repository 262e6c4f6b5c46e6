"""Admins and raters (app/access.py): a rater's call to any event of the full app but the arena's is
refused and changes nothing, whether named in the API or not; an admin passes; the auth file and
the host are checked before anything starts."""

import json
import uuid

import httpx
import pytest
from gradio_client import Client
from helpers import arena_store, serve

from app.access import REFUSED, Access, read_auth_file
from app.blocks import build_app
from app.state import Lab

USERS = {"ada": ("ada-pw", "admin"), "bo": ("bo-pw", "rater"), "cy": ("cy-pw", "rater")}
ARENA_API = {"arena_next", "arena_vote", "arena_undo"}


@pytest.fixture(scope="module")
def lab_app(tmp_path_factory, tiny_model_dir):
    store = arena_store(tmp_path_factory.mktemp("access"), tiny_model_dir)
    access = Access(USERS)
    demo = build_app(Lab(store, device="cpu"), access)
    yield serve(demo, auth=access.gradio_auth()), demo, store
    demo.close()


def signed_in(url: str, user: str) -> httpx.Client:
    http = httpx.Client(base_url=url, timeout=120, follow_redirects=True)
    r = http.post("login", data={"username": user, "password": USERS[user][0]})
    assert r.status_code == 200, r.text
    return http


def call(http: httpx.Client, fn_index: int, n_inputs: int) -> dict:
    """One event by number through the queue, as the page fires it; returns the final message."""
    session = uuid.uuid4().hex
    r = http.post("gradio_api/queue/join", json={"data": [None] * n_inputs, "fn_index": fn_index,
                                                  "session_hash": session, "event_data": None, "trigger_id": None})
    assert r.status_code == 200, r.text
    with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    return msg
    raise AssertionError(f"event {fn_index}: no answer")


def by_role(demo) -> int:
    """The page's first event: it shows or hides the tabs by the caller's role."""
    return next(i for i in demo.open_to_raters if demo.fns[i].api_name == "by_role")


def snapshot(store) -> dict:
    """Every table's rows and every file of the data directory."""
    tables = {t: list(store.db.query(f"SELECT * FROM [{t}]")) for t in store.db.table_names()}
    files = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file()
                   and not p.name.startswith("lab.db"))
    return {"tables": tables, "files": files}


def test_auth_file_lines_carry_a_role(tmp_path):
    from app.main import main

    good = tmp_path / "users.txt"
    good.write_text("# the team\nana:s3cret:admin\n\nbo : pass:with:colons : rater\n")
    access = read_auth_file(str(good))
    assert access.users == {"ana": ("s3cret", "admin"), "bo": ("pass:with:colons", "rater")}
    assert access.role("ana") == "admin" and access.role("bo") == "rater" and access.role("nobody") == "rater"
    assert Access().role(None) == "admin"  # no sign-in: whoever reaches the app (on loopback) is an admin
    for text, why in (("ana:s3cret:admin\njust-a-name\n", "line 2 of bad.txt must be USER:PASSWORD:ROLE"),
                      ("ana:s3cret\n", "line 1 of bad.txt must be USER:PASSWORD:ROLE, ROLE one of admin, rater"),
                      ("ana:s3cret:owner\n", "line 1 of bad.txt must be USER:PASSWORD:ROLE"),
                      ("ana:a:admin\nana:b:rater\n", "line 2 of bad.txt names 'ana' a second time"),
                      ("# nobody\n", "names no USER:PASSWORD:ROLE")):
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(Exception, match=why):
            read_auth_file(str(bad))
    with pytest.raises(SystemExit) as e:  # the app refuses to start, with the line named
        main(["--auth-file", str(bad), "--data-dir", str(tmp_path / "d")])
    assert e.value.code == 2


def test_a_non_loopback_host_without_sign_in_needs_to_be_asked_for(tmp_path, capsys):
    from app.main import loopback, main

    assert loopback("127.0.0.1") and loopback("localhost") and loopback("::1")
    assert not loopback("0.0.0.0") and not loopback("192.168.1.20") and not loopback("lab.example.org")
    with pytest.raises(SystemExit) as e:
        main(["--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "anyone who can reach port 7860 may launch and cancel jobs" in err and "--allow-anyone" in err
    assert not (tmp_path / "d").exists()  # refused before anything was made


def test_a_rater_is_refused_every_event_but_the_arenas_and_changes_nothing(lab_app):
    url, demo, store = lab_app
    named = {fn.api_name: i for i, fn in demo.fns.items() if fn.api_visibility != "private"}
    # The API names a client sees are the app's named events: nothing is listed that is not tested here.
    api = Client(url, verbose=False, download_files=False, auth=("ada", "ada-pw")).view_api(
        print_info=False, return_format="dict")
    assert {n.lstrip("/") for n in api["named_endpoints"]} <= set(named)
    assert {"compare", "launch", "cancel", "resume", "arena_prepare", "arena_export_csv", "bench", "sweep",
            "evaluate", "leaderboard"} <= set(named)
    assert {demo.fns[i].api_name for i in demo.open_to_raters if demo.fns[i].api_visibility != "private"} == ARENA_API

    before = snapshot(store)
    rater = signed_in(url, "bo")
    refused = []
    for i, fn in demo.fns.items():
        if i in demo.open_to_raters:
            continue
        msg = call(rater, i, len(fn.inputs))
        assert msg["success"] is False and msg["output"]["error"] == REFUSED, (fn.api_name, msg)
        refused.append(fn.api_name)
    assert len(refused) >= 25 and set(named) - ARENA_API <= set(refused)
    assert snapshot(store) == before

    # The page a rater gets: its first event hides every tab but the Arena, and selects it.
    shown = call(rater, by_role(demo), 0)["output"]["data"]
    assert shown[0]["selected"] == "Arena" and all(t["visible"] is False for t in shown[1:])
    # ... and the arena works for them.
    client = Client(url, verbose=False, download_files=False, auth=("bo", "bo-pw"))
    token = client.predict("", api_name="/arena_next")[0]
    client.predict(token, "", "left", api_name="/arena_vote")
    assert [v["rater"] for v in store.votes()] == ["bo"]


def test_an_admin_passes_every_event(lab_app):
    url, demo, store = lab_app
    admin = signed_in(url, "ada")
    for i, fn in demo.fns.items():
        if fn.api_name in ARENA_API or i in demo.open_to_raters:
            continue
        msg = call(admin, i, len(fn.inputs))
        # Called without inputs an event may fail for want of them, never for the caller's role.
        assert (msg.get("output") or {}).get("error") != REFUSED, (fn.api_name, msg)
    shown = call(admin, by_role(demo), 0)["output"]["data"]
    assert all(t["visible"] is True for t in shown[1:])
    client = Client(url, verbose=False, download_files=False, auth=("ada", "ada-pw"))
    exported = client.predict(api_name="/arena_export_csv")
    assert open(exported["path"]).read().startswith("vote,battle,prompt")
