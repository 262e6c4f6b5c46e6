"""What several test modules share: serving the app (in this process, or as a user starts it),
headless Chromium, the arena's blind-check material, and a registered teacher -> student lineage."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(demo, **launch) -> str:
    """Serve a Blocks app from this process on a free port; returns its URL."""
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch)
    return f"http://127.0.0.1:{port}/"


def wait_for(cond, timeout: float = 240, poll: float = 0.2) -> bool:
    """Wait until `cond()` holds (True), or fail after `timeout` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(poll)
    raise AssertionError("timed out")


def wait_job(store, job_id: int, states=None, timeout: float = 300) -> dict:
    """Wait until a job is in one of `states` (default: ended); returns its row."""
    from engine import jobs

    states = states or jobs.TERMINAL
    try:
        wait_for(lambda: store.job(job_id)["status"] in states, timeout, poll=0.3)
    except AssertionError:
        raise AssertionError(f"job {job_id} is still {store.job(job_id)['status']}") from None
    return store.job(job_id)


def stop_jobs(store) -> None:
    """Cancel every queued or running job of `store` (a test that failed half way leaves none behind)."""
    from engine import jobs

    for job in store.jobs(limit=1000):
        if job["status"] in jobs.ACTIVE:
            with contextlib.suppress(Exception):
                jobs.cancel(store, job["id"])


@contextlib.contextmanager
def app_process(*args: str, env: dict | None = None):
    """`python -m app ARGS` on a free port, as a user starts it; yields its URL once the page
    answers (its output is the error if it dies first), and stops it afterwards."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app", *args, "--port", str(port)], cwd=ROOT,
                            env=env or dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stdout.read().decode()) from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def browser_or_skip():
    """Playwright's sync API, when Debian's Chromium is there (CI insists on it: LAB_REQUIRE_BROWSER)."""
    if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
        if os.environ.get("LAB_REQUIRE_BROWSER"):
            pytest.fail("LAB_REQUIRE_BROWSER is set but /usr/bin/chromium is missing (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api")


# -- the arena ---------------------------------------------------------------------------------------
ARENA_TEACHER = {"model": "zebra-teacher-qx", "steps": 2, "guidance": 3.5}
ARENA_STUDENT = {"model": "zebra-student-qx", "steps": 1, "guidance": 1.0}


def arena_store(root, model_dir, n=4):
    """A data directory with `n` battles of a (tiny) student against its teacher, under names a
    rater must never see."""
    from engine.arena import battles
    from engine.arena.settings import PrepareConfig
    from engine.families.embedded import EmbeddedFamily
    from engine.store import Store

    store = Store(root)
    store.register_model("zebra-teacher-qx", model_dir, "embedded")
    store.register_model("zebra-student-qx", model_dir, "embedded", parent="zebra-teacher-qx")
    family = EmbeddedFamily.load(model_dir)
    battles.prepare(store, [ARENA_TEACHER, ARENA_STUDENT], battles.world_prompts(n, seed=2), PrepareConfig(n=n),
                    load=lambda name: family)
    return store


def forbidden(store, model_dir) -> list[str]:
    """Every string that would tell a rater which model or setting is on a side."""
    from engine.arena import settings as S

    words = ["zebra", "teacher-qx", "student-qx", str(model_dir), "steps", "guidance", "embedded"]
    for s in (ARENA_TEACHER, ARENA_STUDENT):
        n = S.normalize(s)
        words += [S.key(n), S.label(n), json.dumps(n)]
    for b in store.battles():
        words += [b["a_image"], b["b_image"], b["a_setting"], b["b_setting"]]
    return words


def assert_blind(text: str, words: list[str], where: str) -> None:
    low = text.lower()
    leaked = [w for w in words if w.lower() in low]
    assert not leaked, f"{where} reveals {leaked}"


# -- evaluation ----------------------------------------------------------------------------------------
def register_lineage(store, tiny_model_dir, tmp_path) -> None:
    """tiny-teacher -> tiny-student (2 steps recommended), registered as distillation registers them."""
    from engine.families.embedded import EmbeddedFamily

    store.register_model("tiny-teacher", tiny_model_dir, "embedded")
    student = EmbeddedFamily.load(tiny_model_dir)
    with torch.no_grad():
        for p in student.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student.save(tmp_path / "student", dtype=torch.float32, extra={"recommended": {"steps": 2, "guidance": 5.0}})
    store.register_model("tiny-student", tmp_path / "student", "embedded", parent="tiny-teacher", round=0)


def cast(store, battle: dict, rater: str, outcome: str) -> dict:
    """Show the battle to the rater (as `next_battle` does), then vote on it through `votes.cast`."""
    from engine.arena import votes

    store.serve(battle["id"], votes.check_rater(rater))
    return votes.cast(store, battle["token"], rater, outcome)
