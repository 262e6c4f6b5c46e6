"""Load test of the arena: many raters voting at once through the app's API, on a database as big
as you like.

    python scripts/arena_load.py --clients 20 --votes 1000
    python scripts/arena_load.py --clients 20 --votes 1000 --battles 10000 --prior-votes 50000

Starts the app on a fresh data directory holding pre-made battles with tiny images (no model runs;
`--battles` of them, and `--prior-votes` votes already cast by other raters), lets `--clients`
raters each fetch a battle and vote on it, over and over, all at once (every `--dup-every`-th vote
is sent a second time, which must be refused), then checks the database: exactly one row per vote
accepted, none for a refused duplicate. The clients are light (asyncio over one HTTP connection
pool), each a page of its own calling the endpoints as the page does (Gradio's queue, one session
per rater), so the figures are the server's; each call's latency is timed from
the client, and the JSON line printed at the end holds the median (p50) and p95 of each endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from engine.arena import settings as S  # noqa: E402
from engine.store import Store  # noqa: E402

SETTINGS = [{"model": "embedded", "steps": 50, "guidance": 5.0}, {"model": "embedded", "steps": 8, "guidance": 5.0},
            {"model": "embedded", "steps": 50, "guidance": 1.0}]


def seed_battles(store: Store, n: int, settings: list[dict] = SETTINGS, seed: int = 0) -> list[dict]:
    """`n` battles between the settings (first against each other one) with tiny solid-colour
    images, written straight to the store in one transaction: what `prepare` makes, without
    running a model. Battles share a pool of at most 64 image files (a served file is made per
    battle anyway)."""
    rng = random.Random(seed)
    keys = [S.key(S.normalize(s)) for s in settings]
    pool = []
    for _ in range(min(64, 2 * n)):
        path = store.new_file(".png", folder="arena")
        Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3))).save(path)
        pool.append(path.name)
    with store._write():
        return [store.add_battle(prompt=f"prompt {i}", seed=i, category=("basic", "faces", "text")[i % 3],
                                 source="load", a_setting=keys[0], b_setting=keys[1 + i % (len(keys) - 1)],
                                 a_image=pool[(2 * i) % len(pool)], b_image=pool[(2 * i + 1) % len(pool)],
                                 left_side=rng.choice("ab"))
                for i in range(n)]


def seed_votes(store: Store, n: int, per_rater: int = 1000, seed: int = 0) -> None:
    """`n` votes already cast by other raters ("earlier-000", ...; `per_rater` each, on distinct
    battles), written straight to the store in one transaction (the triggers keep the counts)."""
    rng = random.Random(seed)
    ids = [r["id"] for r in store.db.query("SELECT id FROM battles")]
    rows = []
    for r in range((n + per_rater - 1) // per_rater):
        for b in rng.sample(ids, min(per_rater, len(ids), n - len(rows))):
            rows.append((b, f"earlier-{r:03d}", rng.choice(("left", "right", "tie", "both_bad"))))
    with store._write():
        store.db.conn.executemany(
            "INSERT INTO votes (battle_id, rater, left_setting, right_setting, outcome, created) "
            "SELECT id, ?, a_setting, b_setting, ?, '2026-01-01' FROM battles WHERE id = ?",
            [(rater, outcome, b) for b, rater, outcome in rows])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _call(http, api: str, *data, session: str, fn_index: dict[str, int]) -> list:
    """One call of an endpoint as the page makes it: join the queue in this rater's session, then
    read the session's event stream until the answer."""
    r = await http.post("gradio_api/queue/join", json={"data": list(data), "fn_index": fn_index[api],
                                                        "session_hash": session, "event_data": None,
                                                        "trigger_id": None})
    r.raise_for_status()
    async with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as events:
        async for line in events.aiter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    if not msg.get("success"):
                        raise RuntimeError((msg.get("output") or {}).get("error") or msg)
                    return msg["output"]["data"]
    raise RuntimeError(f"{api}: the stream ended without an answer")


def run_load(url: str, clients: int, votes_per_client: int, dup_every: int = 10, seed: int = 0) -> dict:
    """Each client is one rater: fetch the next battle, vote on it, and now and then vote again."""
    import httpx

    accepted, dup_sent, dup_refused, errors = [0] * clients, [0] * clients, [0] * clients, []
    timings: dict[str, list[float]] = {"arena_next": [], "arena_vote": []}

    async def timed(http, api: str, *data) -> list:
        start = time.perf_counter()
        out = await _call(http, api, *data, session=sessions[data[0] if api == "arena_next" else data[1]],
                          fn_index=fn_index)
        timings[api].append(time.perf_counter() - start)
        return out

    async def rater(http, i: int) -> None:
        rng = random.Random(f"{seed}-{i}")
        name = f"rater-{i:02d}"
        try:
            for k in range(votes_per_client):
                token = (await timed(http, "arena_next", name))[0]
                if not token:
                    errors.append(f"{name}: no battle left after {k} votes")
                    return
                await timed(http, "arena_vote", token, name, rng.choice(("left", "right", "tie", "both_bad")))
                accepted[i] += 1
                if (k + 1) % dup_every == 0:
                    dup_sent[i] += 1
                    try:
                        await _call(http, "arena_vote", token, name, "left", session=sessions[name],
                                    fn_index=fn_index)
                    except RuntimeError as e:
                        if "already voted" in str(e):
                            dup_refused[i] += 1
                        else:
                            errors.append(f"{name}: {e}")
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {e}")

    sessions = {f"rater-{i:02d}": uuid.uuid4().hex[:11] for i in range(clients)}  # one page each
    fn_index: dict[str, int] = {}

    async def everyone() -> float:
        limits = httpx.Limits(max_connections=4 * clients)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            config = (await http.get("config")).json()
            fn_index.update({d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")})
            start = time.perf_counter()
            await asyncio.gather(*(rater(http, i) for i in range(clients)))
            return time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(1) as thread:  # a loop of its own, whoever calls
        seconds = thread.submit(asyncio.run, everyone()).result()
    ms = lambda xs, q: round(1000 * statistics.quantiles(xs, n=100)[q - 1], 1) if len(xs) > 1 else None  # noqa: E731
    return {"clients": clients, "votes_accepted": sum(accepted), "duplicates_sent": sum(dup_sent),
            "duplicates_refused": sum(dup_refused), "errors": len(errors), "error_samples": errors[:3],
            "seconds": round(seconds, 2), "votes_per_second": round(sum(accepted) / seconds, 1),
            "requests_per_second": round((2 * sum(accepted) + sum(dup_sent)) / seconds, 1),
            **{f"{api}_ms_p{q}": ms(xs, q) for api, xs in timings.items() for q in (50, 95)}}


def serve(data_dir: str | Path, port: int) -> subprocess.Popen:
    """`python -m app --arena-only` on this data directory, as raters would reach it; waits until up."""
    cmd = [sys.executable, "-m", "app", "--arena-only", "--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited with code {proc.returncode}") from None
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the app did not start in 120 s")


def load_test(clients: int, votes: int, dup_every: int = 10, battles: int | None = None,
              prior_votes: int = 0) -> dict:
    """Seed battles (and earlier votes), serve the arena, run the raters, count the rows."""
    per_client = votes // clients
    with tempfile.TemporaryDirectory() as d:
        store = Store(d)
        seed_battles(store, max(battles or 0, per_client))
        seed_votes(store, prior_votes)
        prior = store.vote_count()
        port = free_port()
        proc = serve(d, port)
        try:
            result = run_load(f"http://127.0.0.1:{port}/", clients, per_client, dup_every)
        finally:
            proc.terminate()
            proc.wait(30)
        result["battles"], result["prior_votes"] = len(store.battles()), prior
        result["rows_in_database"] = store.vote_count() - prior
        result["distinct_battle_rater_pairs"] = len({(v["battle_id"], v["rater"]) for v in store.votes()
                                                     if not v["rater"].startswith("earlier-")})
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--votes", type=int, default=1000, help="votes in total, spread evenly over the clients")
    p.add_argument("--dup-every", type=int, default=10, help="send every N-th vote twice")
    p.add_argument("--battles", type=int, default=None, help="battles in the database (default: enough)")
    p.add_argument("--prior-votes", type=int, default=0, help="votes already cast by other raters")
    args = p.parse_args()
    print(json.dumps(load_test(args.clients, args.votes, args.dup_every, args.battles, args.prior_votes)))


if __name__ == "__main__":
    main()
