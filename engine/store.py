"""The lab's SQLite database: one module owns the connection, the schema and every query.

The schema is a list of ordered, named migrations; each applied one is recorded in the
`migrations` table, so opening an old database brings it up to date. WAL mode lets the app read
while a job process writes.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

from .paths import data_dir

DB_NAME = "lab.db"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _m001_models_generations(db: sqlite_utils.Database) -> None:
    db["models"].create({
        "name": str, "path": str, "family": str, "parent": str, "recipe": str, "round": int,
        "created": str,
    }, pk="name", not_null={"path", "family"})
    db["generations"].create({
        "id": int, "model": str, "prompt": str, "seed": int, "steps": int, "guidance": float,
        "height": int, "width": int, "settings": str, "nfe": int, "skipped": int, "seconds": float,
        "peak_mem_mb": float, "image": str, "created": str,
    }, pk="id")
    db["generations"].create_index(["model"])


def _m_arena_battles_votes(db: sqlite_utils.Database) -> None:
    # A battle: one prompt and seed rendered by two settings (canonical JSON), shown with `left`
    # ('a' or 'b') on the left. Clients only ever see `token`, never `id`.
    db.execute("""CREATE TABLE battles (
        id INTEGER PRIMARY KEY, token TEXT NOT NULL UNIQUE, prompt TEXT NOT NULL, seed INTEGER NOT NULL,
        category TEXT, source TEXT, a_setting TEXT NOT NULL, b_setting TEXT NOT NULL,
        a_image TEXT NOT NULL, b_image TEXT NOT NULL, left_side TEXT NOT NULL CHECK (left_side IN ('a', 'b')),
        created TEXT NOT NULL)""")
    # One vote per rater per battle, enforced here; the sides' settings are copied so an export
    # of the votes alone says which model was on which side.
    db.execute("""CREATE TABLE votes (
        id INTEGER PRIMARY KEY, battle_id INTEGER NOT NULL REFERENCES battles(id), rater TEXT NOT NULL,
        left_setting TEXT NOT NULL, right_setting TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('left', 'right', 'tie', 'both_bad')),
        after_undo INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL, UNIQUE (battle_id, rater))""")
    db.execute("CREATE INDEX votes_rater ON votes (rater)")
    db.execute("""CREATE TABLE vote_undos (
        id INTEGER PRIMARY KEY, battle_id INTEGER NOT NULL, rater TEXT NOT NULL, outcome TEXT NOT NULL,
        voted TEXT NOT NULL, undone TEXT NOT NULL)""")
    db.execute("CREATE INDEX vote_undos_battle_rater ON vote_undos (battle_id, rater)")


def _m_jobs(db: sqlite_utils.Database) -> None:
    # A distillation job: its recipe (JSON) and life cycle; progress and loss stream in while it runs.
    db["jobs"].create({
        "id": int, "technique": str, "name": str, "teacher": str, "recipe": str, "status": str, "pid": int,
        "device": str, "created": str, "started": str, "finished": str, "round": int, "rounds": int,
        "step": int, "total": int, "message": str, "error": str, "models": str, "resume": int,
    }, pk="id", not_null={"recipe", "status", "created"})
    db["jobs"].create_index(["status"])
    db["job_metrics"].create({"id": int, "job_id": int, "round": int, "step": int, "loss": float, "lr": float,
                              "seconds": float, "created": str}, pk="id", foreign_keys=[("job_id", "jobs", "id")])
    db["job_metrics"].create_index(["job_id"])
    # Quality after every round, so the compounding loss along a lineage is visible.
    db["job_evals"].create({"id": int, "job_id": int, "round": int, "model": str, "steps": int, "guidance": float,
                            "adherence": float, "by_category": str, "n": int, "created": str},
                           pk="id", foreign_keys=[("job_id", "jobs", "id")])



def _m_accel_calibrations_bench(db: sqlite_utils.Database) -> None:
    # A cache's calibration for one model (key: the model directory), e.g. TeaCache's polynomial.
    db["calibrations"].create({"model": str, "method": str, "data": str, "created": str},
                              pk=("model", "method"), not_null={"data"})
    # A `bench` run: the decision table of one model, measured on one machine.
    db["bench_runs"].create({"id": int, "model": str, "device": str, "config": str, "rows": str, "created": str},
                            pk="id", not_null={"rows"})
    db["bench_runs"].create_index(["model"])


def _m_evaluate(db: sqlite_utils.Database) -> None:
    # Jobs of other kinds than distillation (an evaluation run) share the jobs table and process machinery.
    db.execute("ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'distill'")
    # Every evaluation image once: key = model (path and weights' time), settings (canonical JSON), prompt, seed.
    db["eval_images"].create({"id": int, "model_key": str, "settings": str, "prompt": str, "seed": int,
                              "image": str, "nfe": int, "skipped": int, "seconds": float, "created": str},
                             pk="id", not_null={"model_key", "settings", "prompt", "seed", "image"})
    db["eval_images"].create_index(["model_key", "settings", "prompt", "seed"], unique=True)
    # An evaluation run: a model setting scored on a golden set against its teacher's images.
    db["eval_runs"].create({"id": int, "job_id": int, "model": str, "teacher": str, "golden": str, "golden_sha": str,
                            "settings": str, "result": str, "created": str}, pk="id", not_null={"model", "result"})
    db["eval_runs"].create_index(["model"])
    db["eval_items"].create({"id": int, "run_id": int, "idx": int, "prompt": str, "category": str, "seed": int,
                             "image": str, "ref_image": str, "adherent": int, "missed": str, "psnr": float,
                             "feature_distance": float, "clip_score": float, "vlm": str},
                            pk="id", foreign_keys=[("run_id", "eval_runs", "id")])
    db["eval_items"].create_index(["run_id"])
    # VLM judge answers, keyed by endpoint, model, rubric, prompt and image bytes (engine/evaluate/vlm.py).
    db["vlm_judgments"].create({"key": str, "endpoint": str, "model": str, "result": str, "created": str},
                               pk="key", not_null={"result"})

MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("001_models_generations", _m001_models_generations),
    ("arena_battles_votes", _m_arena_battles_votes),
    ("jobs", _m_jobs),
    ("accel_calibrations_bench", _m_accel_calibrations_bench),
    ("evaluate", _m_evaluate),
]


class Store:
    """The database and the image files beside it, under one data directory."""

    def __init__(self, root: str | Path | None = None, *, memory: bool = False):
        self.root = data_dir(root) if not memory else None
        self._local = threading.local()
        # An in-memory database exists only on its one connection: share it (tests, one thread).
        self._memory_db = sqlite_utils.Database(memory=True) if memory else None
        if not memory:
            self.db.enable_wal()
        self.migrate()

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection (sqlite connections must not cross threads)."""
        if self._memory_db is not None:
            return self._memory_db
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.root / DB_NAME, timeout=30)
            conn.execute("PRAGMA busy_timeout = 30000")
            db = self._local.db = sqlite_utils.Database(conn)
        return db

    # -- schema ---------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        self.db["migrations"].create({"name": str, "applied": str}, pk="name", if_not_exists=True)
        done = {r["name"] for r in self.db["migrations"].rows}
        applied = []
        for name, fn in MIGRATIONS:
            if name in done:
                continue
            with self.db.conn:
                fn(self.db)
                self.db["migrations"].insert({"name": name, "applied": _now()})
            applied.append(name)
        return applied

    # -- files ----------------------------------------------------------------------------------
    def new_file(self, suffix: str, folder: str = "images") -> Path:
        """A fresh, opaquely named file path under the data directory."""
        if self.root is None:
            raise RuntimeError("an in-memory store keeps no files")
        d = self.root / folder
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{secrets.token_hex(12)}{suffix}"

    def new_dir(self, folder: str) -> Path:
        """A fresh, opaquely named directory under the data directory."""
        path = self.new_file("", folder)
        path.mkdir(parents=True)
        return path

    # -- models ---------------------------------------------------------------------------------
    def register_model(self, name: str, path: str | Path, family: str, *, parent: str | None = None,
                       recipe: dict | None = None, round: int | None = None) -> dict:
        row = {"name": name, "path": str(path), "family": family, "parent": parent,
               "recipe": json.dumps(recipe) if recipe is not None else None, "round": round, "created": _now()}
        with self.db.conn:
            self.db["models"].upsert(row, pk="name")
        return row

    def model(self, name: str) -> dict | None:
        rows = list(self.db["models"].rows_where("name = ?", [name]))
        return rows[0] if rows else None

    def models(self) -> list[dict]:
        return list(self.db["models"].rows_where(order_by="created, name"))

    def lineage(self, name: str) -> list[dict]:
        """The model and its ancestors, root first."""
        chain, seen = [], set()
        row = self.model(name)
        while row is not None and row["name"] not in seen:
            chain.append(row)
            seen.add(row["name"])
            row = self.model(row["parent"]) if row["parent"] else None
        return chain[::-1]

    # -- generations ----------------------------------------------------------------------------
    def record_generation(self, **fields: Any) -> int:
        fields = dict(fields)
        if isinstance(fields.get("settings"), dict):
            fields["settings"] = json.dumps(fields["settings"], sort_keys=True)
        fields["created"] = _now()
        with self.db.conn:
            return self.db["generations"].insert(fields).last_pk

    def generations(self, limit: int = 50) -> list[dict]:
        return list(self.db["generations"].rows_where(order_by="id desc", limit=limit))

    # -- arena: battles and votes -----------------------------------------------------------------
    def add_battle(self, *, prompt: str, seed: int, category: str | None, source: str | None,
                   a_setting: str, b_setting: str, a_image: str, b_image: str, left_side: str) -> dict:
        """Insert a battle (settings as canonical JSON); returns its row, with a fresh opaque token."""
        row = {"token": secrets.token_urlsafe(12), "prompt": prompt, "seed": seed, "category": category,
               "source": source, "a_setting": a_setting, "b_setting": b_setting, "a_image": a_image,
               "b_image": b_image, "left_side": left_side, "created": _now()}
        with self.db.conn:
            row["id"] = self.db["battles"].insert(row).last_pk
        return row

    def battle(self, battle_id: int) -> dict | None:
        rows = list(self.db["battles"].rows_where("id = ?", [battle_id]))
        return rows[0] if rows else None

    def battle_by_token(self, token: str) -> dict | None:
        rows = list(self.db["battles"].rows_where("token = ?", [token]))
        return rows[0] if rows else None

    def battles(self) -> list[dict]:
        return list(self.db["battles"].rows_where(order_by="id"))

    def arena_image(self, setting: str, prompt: str, seed: int) -> str | None:
        """An image file an earlier battle already made for this setting, prompt and seed."""
        row = self.db.execute(
            "SELECT CASE WHEN a_setting = :s THEN a_image ELSE b_image END FROM battles "
            "WHERE (a_setting = :s OR b_setting = :s) AND prompt = :p AND seed = :seed LIMIT 1",
            {"s": setting, "p": prompt, "seed": seed}).fetchone()
        return row[0] if row else None

    def battle_candidates(self, rater: str) -> list[dict]:
        """Battles this rater has not voted on, each with its number of votes so far."""
        cur = self.db.execute(
            "SELECT b.id, b.token, b.a_setting, b.b_setting, "
            "(SELECT count(*) FROM votes v WHERE v.battle_id = b.id) AS n_votes FROM battles b "
            "WHERE NOT EXISTS (SELECT 1 FROM votes v WHERE v.battle_id = b.id AND v.rater = ?) ORDER BY b.id",
            [rater])
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def comparison_counts(self) -> list[dict]:
        """Per ordered (a_setting, b_setting) pair: how many battles and how many votes."""
        cur = self.db.execute(
            "SELECT b.a_setting, b.b_setting, count(DISTINCT b.id) AS n_battles, count(v.id) AS n_votes "
            "FROM battles b LEFT JOIN votes v ON v.battle_id = b.id GROUP BY b.a_setting, b.b_setting")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def record_vote(self, battle_id: int, rater: str, outcome: str) -> dict:
        """Insert one vote in one short transaction. A second vote by the same rater on the same
        battle, or a vote on a battle that does not exist, raises UsageError and writes nothing."""
        from .errors import UsageError

        with self.db.conn:
            cur = self.db.execute(
                "INSERT INTO votes (battle_id, rater, left_setting, right_setting, outcome, after_undo, created) "
                "SELECT id, :rater, CASE left_side WHEN 'a' THEN a_setting ELSE b_setting END, "
                "CASE left_side WHEN 'a' THEN b_setting ELSE a_setting END, :outcome, "
                "EXISTS (SELECT 1 FROM vote_undos u WHERE u.battle_id = :b AND u.rater = :rater), :now "
                "FROM battles WHERE id = :b ON CONFLICT (battle_id, rater) DO NOTHING",
                {"b": battle_id, "rater": rater, "outcome": outcome, "now": _now()})
            inserted = cur.rowcount
        if inserted == 1:
            return next(self.db["votes"].rows_where("battle_id = ? AND rater = ?", [battle_id, rater]))
        if self.battle(battle_id) is None:
            raise UsageError("battle: no such battle (it may have been removed); load the next one")
        raise UsageError(f"rater {rater!r} has already voted on this battle: one vote per rater per battle")

    def undo_last_vote(self, rater: str) -> dict | None:
        """Withdraw this rater's most recent vote (kept in vote_undos); returns it, or None."""
        with self.db.conn:
            row = self.db.execute("SELECT id, battle_id, outcome, created FROM votes WHERE rater = ? "
                                  "ORDER BY id DESC LIMIT 1", [rater]).fetchone()
            if row is None:
                return None
            vote_id, battle_id, outcome, created = row
            self.db.execute("INSERT INTO vote_undos (battle_id, rater, outcome, voted, undone) VALUES (?, ?, ?, ?, ?)",
                            [battle_id, rater, outcome, created, _now()])
            self.db.execute("DELETE FROM votes WHERE id = ?", [vote_id])
        return {"id": vote_id, "battle_id": battle_id, "rater": rater, "outcome": outcome, "created": created}

    def votes(self) -> list[dict]:
        """Every vote with its battle's prompt, seed, category and settings, oldest first."""
        cur = self.db.execute(
            "SELECT v.id, v.battle_id, b.token AS battle, b.prompt, b.seed, b.category, b.source, v.rater, "
            "v.left_setting, v.right_setting, b.a_setting, b.b_setting, v.outcome, v.after_undo, v.created "
            "FROM votes v JOIN battles b ON b.id = v.battle_id ORDER BY v.id")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def vote_count(self) -> int:
        return self.db["votes"].count

    def undo_count(self) -> int:
        return self.db["vote_undos"].count

    # -- distillation jobs ------------------------------------------------------------------------
    JOB_STATES = ("queued", "running", "succeeded", "failed", "canceled", "interrupted")

    def create_job(self, *, technique: str, name: str, teacher: str, recipe: str, rounds: int,
                   device: str = "auto") -> int:
        with self.db.conn:
            return self.db["jobs"].insert({
                "technique": technique, "name": name, "teacher": teacher, "recipe": recipe, "status": "queued",
                "device": device, "created": _now(), "round": 0, "rounds": rounds, "step": 0, "total": 0,
                "resume": 0}).last_pk

    def job(self, job_id: int) -> dict | None:
        rows = list(self.db["jobs"].rows_where("id = ?", [job_id]))
        return rows[0] if rows else None

    def jobs(self, limit: int = 100) -> list[dict]:
        return list(self.db["jobs"].rows_where(order_by="id desc", limit=limit))

    def update_job(self, job_id: int, **fields: Any) -> None:
        if "models" in fields and not isinstance(fields["models"], (str, type(None))):
            fields["models"] = json.dumps(fields["models"])
        with self.db.conn:
            self.db["jobs"].update(job_id, fields)

    def set_job_status(self, job_id: int, status: str, *, only_from: tuple[str, ...] | None = None,
                       **fields: Any) -> bool:
        """Move a job to `status` (optionally only from the given states); True if it moved."""
        if status not in self.JOB_STATES:
            raise ValueError(f"status must be one of {self.JOB_STATES}, got {status!r}")
        sets = {"status": status, **{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in fields.items()}}
        if status in ("succeeded", "failed", "canceled", "interrupted"):
            sets.setdefault("finished", _now())
        cols = ", ".join(f"{k} = :{k}" for k in sets)
        where = "id = :job_id" + (f" AND status IN ({', '.join(repr(s) for s in only_from)})" if only_from else "")
        with self.db.conn:
            return self.db.execute(f"UPDATE jobs SET {cols} WHERE {where}", {**sets, "job_id": job_id}).rowcount == 1

    def claim_next_job(self) -> dict | None:
        """Atomically pick the oldest queued job and mark it running, unless one is running already."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            busy = conn.execute("SELECT 1 FROM jobs WHERE status = 'running' LIMIT 1").fetchone()
            row = None if busy else conn.execute(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
            if row:
                conn.execute("UPDATE jobs SET status = 'running', started = ?, pid = NULL, error = NULL "
                             "WHERE id = ?", [_now(), row[0]])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return self.job(row[0]) if row else None

    def add_job_metric(self, job_id: int, **fields: Any) -> None:
        with self.db.conn:
            self.db["job_metrics"].insert({"job_id": job_id, "created": _now(), **fields})

    def job_metrics(self, job_id: int) -> list[dict]:
        return list(self.db["job_metrics"].rows_where("job_id = ?", [job_id], order_by="id"))

    def add_job_eval(self, job_id: int, *, by_category: dict, **fields: Any) -> None:
        with self.db.conn:
            self.db["job_evals"].insert({"job_id": job_id, "by_category": json.dumps(by_category),
                                         "created": _now(), **fields})

    def job_evals(self, job_id: int | None = None) -> list[dict]:
        if job_id is None:
            return list(self.db["job_evals"].rows_where(order_by="id"))
        return list(self.db["job_evals"].rows_where("job_id = ?", [job_id], order_by="id"))

    # -- acceleration: cache calibrations and bench runs ----------------------------------------
    def save_calibration(self, model: str, method: str, data: dict) -> None:
        with self.db.conn:
            self.db["calibrations"].upsert({"model": model, "method": method, "data": json.dumps(data),
                                            "created": _now()}, pk=("model", "method"))

    def calibration(self, model: str, method: str) -> dict | None:
        rows = list(self.db["calibrations"].rows_where("model = ? and method = ?", [model, method]))
        return json.loads(rows[0]["data"]) if rows else None

    def add_bench_run(self, model: str, device: str, config: dict, rows: list[dict]) -> int:
        with self.db.conn:
            return self.db["bench_runs"].insert({"model": model, "device": device, "config": json.dumps(config),
                                                 "rows": json.dumps(rows), "created": _now()}).last_pk

    def bench_runs(self, model: str | None = None, limit: int = 20) -> list[dict]:
        """Bench runs, newest first, with `config` and `rows` decoded."""
        where, args = ("model = ?", [model]) if model else (None, [])
        out = []
        for r in self.db["bench_runs"].rows_where(where, args, order_by="id desc", limit=limit):
            out.append({**r, "config": json.loads(r["config"]), "rows": json.loads(r["rows"])})
        return out

    # -- evaluation: jobs of other kinds, cached images, runs, VLM answers ---------------------------
    def create_kind_job(self, kind: str, *, technique: str, name: str, teacher: str, recipe: str,
                        rounds: int) -> int:
        """Queue a job of another kind than distillation (engine/jobs.py runs it by kind)."""
        with self.db.conn:
            return self.db["jobs"].insert({
                "kind": kind, "technique": technique, "name": name, "teacher": teacher, "recipe": recipe,
                "status": "queued", "device": "auto", "created": _now(), "round": 0, "rounds": rounds, "step": 0,
                "total": 0, "resume": 0}).last_pk

    def eval_images(self, model_key: str, settings: str, keys: list[tuple[str, int]]) -> dict[tuple[str, int], dict]:
        """The cached images among (prompt, seed) pairs for one model and settings."""
        wanted = set(keys)
        rows = self.db["eval_images"].rows_where("model_key = ? AND settings = ?", [model_key, settings])
        return {(r["prompt"], r["seed"]): r for r in rows if (r["prompt"], r["seed"]) in wanted}

    def add_eval_images(self, model_key: str, settings: str, rows: list[dict]) -> None:
        with self.db.conn:
            self.db["eval_images"].insert_all(
                [{"model_key": model_key, "settings": settings, "created": _now(), **r} for r in rows],
                ignore=True)

    def add_eval_run(self, *, model: str, teacher: str, golden: str, golden_sha: str, settings: dict, result: dict,
                     items: list[dict], job_id: int | None = None) -> int:
        with self.db.conn:
            run_id = self.db["eval_runs"].insert({
                "job_id": job_id, "model": model, "teacher": teacher, "golden": golden, "golden_sha": golden_sha,
                "settings": json.dumps(settings, sort_keys=True), "result": json.dumps(result),
                "created": _now()}).last_pk
            self.db["eval_items"].insert_all([
                {"run_id": run_id, **{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in it.items()}}
                for it in items])
        return run_id

    @staticmethod
    def _eval_run_row(r: dict) -> dict:
        return {**r, "settings": json.loads(r["settings"]), "result": json.loads(r["result"])}

    def eval_run(self, run_id: int) -> dict | None:
        rows = list(self.db["eval_runs"].rows_where("id = ?", [run_id]))
        return self._eval_run_row(rows[0]) if rows else None

    def eval_runs(self, model: str | None = None, golden: str | None = None, job_id: int | None = None,
                  limit: int = 200) -> list[dict]:
        """Evaluation runs, newest first, with `settings` and `result` decoded."""
        where, args = [], []
        for col, v in (("model", model), ("golden", golden), ("job_id", job_id)):
            if v is not None:
                where.append(f"{col} = ?")
                args.append(v)
        rows = self.db["eval_runs"].rows_where(" AND ".join(where) or None, args, order_by="id desc", limit=limit)
        return [self._eval_run_row(r) for r in rows]

    def eval_items(self, run_id: int) -> list[dict]:
        out = []
        for r in self.db["eval_items"].rows_where("run_id = ?", [run_id], order_by="idx"):
            out.append({**r, "missed": json.loads(r["missed"]) if r["missed"] else None,
                        "vlm": json.loads(r["vlm"]) if r["vlm"] else None})
        return out

    def set_eval_item_vlm(self, run_id: int, idx: int, vlm: dict) -> None:
        with self.db.conn:
            self.db.execute("UPDATE eval_items SET vlm = ? WHERE run_id = ? AND idx = ?", [json.dumps(vlm), run_id, idx])

    def update_eval_result(self, run_id: int, result: dict) -> None:
        with self.db.conn:
            self.db["eval_runs"].update(run_id, {"result": json.dumps(result)})

    def vlm_judgment(self, key: str) -> dict | None:
        rows = list(self.db["vlm_judgments"].rows_where("key = ?", [key]))
        return json.loads(rows[0]["result"]) if rows else None

    def save_vlm_judgment(self, key: str, endpoint: str, model: str, result: dict) -> None:
        with self.db.conn:
            self.db["vlm_judgments"].upsert({"key": key, "endpoint": endpoint, "model": model,
                                             "result": json.dumps(result), "created": _now()}, pk="key")
