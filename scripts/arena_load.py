"""Load test of the arena: many raters voting at once through the app's API (gradio_client).

    python scripts/arena_load.py --clients 20 --votes 1000

Starts the app on a fresh data directory holding pre-generated tiny battles (no model runs), lets
`--clients` raters each fetch battles and vote on them concurrently (every `--dup-every`-th vote
is sent a second time, which must be refused), then checks the database: exactly one row per vote
accepted, none for a refused duplicate. Prints one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
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
    images, written straight to the store: what `prepare` makes, without running a model."""
    rng = random.Random(seed)
    rows = []
    keys = [S.key(S.normalize(s)) for s in settings]
    for i in range(n):
        a, b = keys[0], keys[1 + i % (len(keys) - 1)]
        files = []
        for _ in range(2):
            path = store.new_file(".png", folder="arena")
            Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3))).save(path)
            files.append(path.name)
        rows.append(store.add_battle(prompt=f"prompt {i}", seed=i, category=("basic", "faces", "text")[i % 3],
                                     source="load", a_setting=a, b_setting=b, a_image=files[0], b_image=files[1],
                                     left_side=rng.choice("ab")))
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_load(url: str, clients: int, votes_per_client: int, dup_every: int = 10, seed: int = 0) -> dict:
    """Each client is one rater: fetch the next battle, vote on it, and now and then vote again."""
    from gradio_client import Client

    accepted, dup_sent, dup_refused, errors = [0] * clients, [0] * clients, [0] * clients, []
    barrier = threading.Barrier(clients)

    def rater(i: int) -> None:
        rng = random.Random(f"{seed}-{i}")
        name = f"rater-{i:02d}"
        try:
            client = Client(url, verbose=False, download_files=False)
            barrier.wait()
            for k in range(votes_per_client):
                token = client.predict(name, api_name="/arena_next")[0]
                if not token:
                    errors.append(f"{name}: no battle left after {k} votes")
                    return
                client.predict(token, name, rng.choice(("left", "right", "tie", "both_bad")), api_name="/arena_vote")
                accepted[i] += 1
                if (k + 1) % dup_every == 0:
                    dup_sent[i] += 1
                    try:
                        client.predict(token, name, "left", api_name="/arena_vote")
                    except Exception as e:
                        if "already voted" in str(e):
                            dup_refused[i] += 1
                        else:
                            errors.append(f"{name}: {e}")
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=rater, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    return {"clients": clients, "votes_accepted": sum(accepted), "duplicates_sent": sum(dup_sent),
            "duplicates_refused": sum(dup_refused), "errors": len(errors), "error_samples": errors[:3],
            "seconds": round(seconds, 2), "votes_per_second": round(sum(accepted) / seconds, 1),
            "requests_per_second": round((2 * sum(accepted) + sum(dup_sent)) / seconds, 1)}


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


def load_test(clients: int, votes: int, dup_every: int = 10) -> dict:
    """Seed battles, serve the arena, run the raters, count the rows."""
    per_client = votes // clients
    with tempfile.TemporaryDirectory() as d:
        store = Store(d)
        seed_battles(store, per_client)
        port = free_port()
        proc = serve(d, port)
        try:
            result = run_load(f"http://127.0.0.1:{port}/", clients, per_client, dup_every)
        finally:
            proc.terminate()
            proc.wait(30)
        result["rows_in_database"] = store.vote_count()
        result["distinct_battle_rater_pairs"] = len({(v["battle_id"], v["rater"]) for v in store.votes()})
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--votes", type=int, default=1000, help="votes in total, spread evenly over the clients")
    p.add_argument("--dup-every", type=int, default=10, help="send every N-th vote twice")
    args = p.parse_args()
    print(json.dumps(load_test(args.clients, args.votes, args.dup_every)))


if __name__ == "__main__":
    main()
