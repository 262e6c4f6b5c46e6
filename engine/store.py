"""The lab's SQLite database: one module owns the connection, the schema and every query.

The schema is sqlite-utils' ordered, named migrations (`MIGRATIONS`), each recorded when applied,
so opening an old database brings it up to date. WAL mode lets the app read while a job process
writes. JSON columns are encoded on the way in and decoded on the way out, here and nowhere else.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process at a time there
    fcntl = None
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from .errors import UsageError
from .paths import data_dir

DB_NAME = "lab.db"
JOB_STATES = ("queued", "running", "succeeded", "failed", "canceled", "interrupted")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _encode(fields: dict) -> dict:
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v for k, v in fields.items()}


def _decode(row: dict | None, *columns: str) -> dict | None:
    """The row with its JSON columns decoded (NULL stays None)."""
    if row is None:
        return None
    return {**row, **{c: json.loads(row[c]) if row.get(c) is not None else None for c in columns}}


MIGRATIONS = Migrations("distillation-lab")


@MIGRATIONS(name="001_models_generations")
def _models_generations(db: sqlite_utils.Database) -> None:
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


@MIGRATIONS(name="arena_battles_votes")
def _arena_battles_votes(db: sqlite_utils.Database) -> None:
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


@MIGRATIONS(name="jobs")
def _jobs(db: sqlite_utils.Database) -> None:
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


@MIGRATIONS(name="accel_calibrations_bench")
def _accel_calibrations_bench(db: sqlite_utils.Database) -> None:
    # A cache's calibration for one model (key: the model directory), e.g. TeaCache's polynomial.
    db["calibrations"].create({"model": str, "method": str, "data": str, "created": str},
                              pk=("model", "method"), not_null={"data"})
    # A `bench` run: the decision table of one model, measured on one machine.
    db["bench_runs"].create({"id": int, "model": str, "device": str, "config": str, "rows": str, "created": str},
                            pk="id", not_null={"rows"})
    db["bench_runs"].create_index(["model"])


@MIGRATIONS(name="evaluate")
def _evaluate(db: sqlite_utils.Database) -> None:
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


@MIGRATIONS(name="jobs_of_any_kind")
def _jobs_of_any_kind(db: sqlite_utils.Database) -> None:
    # One table for jobs of every kind (engine/jobs.py): what a job makes or scores (`name`), a line
    # saying what it does (`label`), its kind's input (`payload`, JSON), and its progress as parts
    # (rounds, settings) of steps (training steps, images), named by `part_unit` and `step_unit`.
    jobs = db["jobs"]
    for column in ("label", "part_unit", "step_unit"):
        jobs.add_column(column, str)
    db.execute("UPDATE jobs SET label = CASE kind WHEN 'eval' THEN 'evaluate ' || name "
               "ELSE technique || ': ' || teacher || ' -> ' || name END, "
               "part_unit = CASE kind WHEN 'eval' THEN 'setting' ELSE 'round' END, "
               "step_unit = CASE kind WHEN 'eval' THEN 'image' ELSE 'step' END")
    jobs.transform(rename={"recipe": "payload", "round": "part", "rounds": "parts"}, drop={"technique", "teacher"})


@MIGRATIONS(name="arena_served")
def _arena_served(db: sqlite_utils.Database) -> None:
    # Which battle was shown to which rater, latest last: a vote counts only on a battle served to
    # its rater, and an undo only while that battle is still the rater's latest.
    db.execute("""CREATE TABLE served (
        id INTEGER PRIMARY KEY, battle_id INTEGER NOT NULL REFERENCES battles(id), rater TEXT NOT NULL,
        created TEXT NOT NULL, UNIQUE (battle_id, rater))""")
    db.execute("CREATE INDEX served_rater ON served (rater, id)")


@MIGRATIONS(name="arena_counts")
def _arena_counts(db: sqlite_utils.Database) -> None:
    # What a rater's next battle needs, kept up to date by triggers so that choosing it costs the
    # same at ten battles as at ten thousand: each battle's comparison (its two settings in sorted
    # order, whichever was drawn as `a`), its votes so far and a random rank among equals; each
    # comparison's battles and votes.
    db.execute("ALTER TABLE battles ADD COLUMN pair TEXT GENERATED ALWAYS AS (CASE WHEN a_setting <= b_setting "
               "THEN a_setting || char(10) || b_setting ELSE b_setting || char(10) || a_setting END) VIRTUAL")
    db.execute("ALTER TABLE battles ADD COLUMN n_votes INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE battles ADD COLUMN rank INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE battles SET n_votes = (SELECT count(*) FROM votes v WHERE v.battle_id = battles.id), "
               "rank = abs(random() % 1000000007)")
    db.execute("CREATE INDEX battles_next ON battles (pair, n_votes, rank)")
    db.execute("""CREATE TABLE comparisons (pair TEXT PRIMARY KEY, n_battles INTEGER NOT NULL DEFAULT 0,
        n_votes INTEGER NOT NULL DEFAULT 0)""")
    db.execute("INSERT INTO comparisons (pair, n_battles, n_votes) "
               "SELECT pair, count(*), sum(n_votes) FROM battles GROUP BY pair")
    db.execute("""CREATE TRIGGER battle_added AFTER INSERT ON battles BEGIN
        INSERT INTO comparisons (pair, n_battles) VALUES (NEW.pair, 1)
        ON CONFLICT (pair) DO UPDATE SET n_battles = n_battles + 1; END""")
    db.execute("""CREATE TRIGGER battle_removed AFTER DELETE ON battles BEGIN
        UPDATE comparisons SET n_battles = n_battles - 1, n_votes = n_votes - OLD.n_votes
        WHERE pair = OLD.pair; END""")
    db.execute("""CREATE TRIGGER vote_added AFTER INSERT ON votes BEGIN
        UPDATE battles SET n_votes = n_votes + 1 WHERE id = NEW.battle_id;
        UPDATE comparisons SET n_votes = n_votes + 1
        WHERE pair = (SELECT pair FROM battles WHERE id = NEW.battle_id); END""")
    db.execute("""CREATE TRIGGER vote_removed AFTER DELETE ON votes BEGIN
        UPDATE battles SET n_votes = n_votes - 1 WHERE id = OLD.battle_id;
        UPDATE comparisons SET n_votes = n_votes - 1
        WHERE pair = (SELECT pair FROM battles WHERE id = OLD.battle_id); END""")


@MIGRATIONS(name="jobs_launch")
def _jobs_launch(db: sqlite_utils.Database) -> None:
    # How a job is launched and ran: an accelerate config file it is launched with, as given
    # (`accelerate launch --config_file`); how many processes ran it and on which machine its main
    # process ran (a job run by a cluster's own launcher is judged alive only where it runs).
    for column, kind in (("launch_config", str), ("processes", int), ("host", str)):
        db["jobs"].add_column(column, kind)


@MIGRATIONS(name="job_metrics_fake_loss")
def _job_metrics_fake_loss(db: sqlite_utils.Database) -> None:
    # A DMD job trains two networks: the fake score's loss is the curve beside the generator's.
    db["job_metrics"].add_column("fake_loss", float)


@MIGRATIONS(name="job_pace")
def _job_pace(db: sqlite_utils.Database) -> None:
    # How a running job is doing, for its page: what it is doing when it is not stepping (`phase`:
    # "loading the teacher", "canceling"), its pace in steps per second and the seconds it has left;
    # on a GPU its peak memory (MiB) and utilisation (%) at the last report.
    for column, kind in (("phase", str), ("rate", float), ("eta", float), ("device_mem_mb", float),
                         ("device_util", float)):
        db["jobs"].add_column(column, kind)


def _adopt_legacy_migrations(db: sqlite_utils.Database) -> None:
    """Databases made before the lab used sqlite-utils' migrations recorded them in a `migrations`
    table of their own: record those as applied, under the same names, and drop that table."""
    if not db["migrations"].exists():
        return
    MIGRATIONS.ensure_migrations_table(db)
    done = {m.name for m in MIGRATIONS.applied(db)}
    with db.atomic():
        for row in db["migrations"].rows:
            if row["name"] not in done:
                db[MIGRATIONS.migrations_table].insert({"migration_set": MIGRATIONS.name, "name": row["name"],
                                                        "applied_at": row["applied"]})
        db["migrations"].drop()


class Store:
    """The database and the image files beside it, under one data directory."""

    def __init__(self, root: str | Path | None = None, *, memory: bool = False):
        self.root = data_dir(root) if not memory else None
        self._local = threading.local()
        # An in-memory database exists only on its one connection: share it (tests, one thread).
        self._memory_db = sqlite_utils.Database(memory=True) if memory else None
        # A data directory (or database) the lab may not write in is opened for reading alone:
        # what only reads (jobs, models, leaderboard) works, anything that would write is refused.
        self.read_only = not memory and not all(
            os.access(p, os.W_OK) for p in (self.root, self.root / DB_NAME) if p.exists())
        try:
            if self.read_only:
                if not (self.root / DB_NAME).exists():
                    raise UsageError(f"data directory: {self.root} is read-only and holds no {DB_NAME}; give "
                                     f"--data-dir a folder the lab may write in")
                if MIGRATIONS.pending(self.db):
                    raise UsageError(f"data directory: {self.root / DB_NAME} needs an update to this version of the "
                                     f"lab, and it is read-only: make it writable, or use a copy")
            else:
                with self._setup_lock():
                    if not memory:
                        self.db.enable_wal()
                    self.migrate()
        except sqlite3.DatabaseError as e:  # a file that is not a database is read, never written over
            where = self.root / DB_NAME if self.root is not None else "the in-memory database"
            raise UsageError(f"data directory: {where} cannot be used as the lab's database ({e}); move it "
                             f"away or restore it from a copy: it was not changed") from None

    @contextmanager
    def _setup_lock(self):
        """Processes that open one data directory at once (`accelerate launch`: every process of a
        job) set it up one after another: switching to WAL and migrating read, then write, and in WAL
        mode a reader that became a writer behind another's back is refused at once, not made to wait."""
        if self.root is None or fcntl is None:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{DB_NAME}.setup-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection (sqlite connections must not cross threads)."""
        if self._memory_db is not None:
            return self._memory_db
        db = getattr(self._local, "db", None)
        if db is None:
            if self.read_only:
                # Read-only: with its write-ahead log present, read through it (committed writes may
                # still be there); without one, the file is all there is and nothing can change it.
                uri = (self.root / DB_NAME).resolve().as_uri()
                wal = (self.root / f"{DB_NAME}-wal").exists()
                conn = sqlite3.connect(f"{uri}?mode=ro" if wal else f"{uri}?immutable=1", uri=True)
            else:
                conn = sqlite3.connect(self.root / DB_NAME, timeout=30)
            conn.execute("PRAGMA busy_timeout = 30000")
            db = self._local.db = sqlite_utils.Database(conn)
        return db

    @contextmanager
    def _write(self):
        """One write transaction that takes its lock at the start (BEGIN IMMEDIATE): a transaction
        that read first and then writes is refused at once in WAL mode when another connection wrote
        in between, while one that waits for the lock is not."""
        if self.read_only:
            raise UsageError(f"data directory: {self.root} is read-only, so nothing can be recorded; make it "
                             f"writable, or copy it somewhere writable and pass --data-dir")
        conn = self.db.conn
        if conn.in_transaction:  # inside another write: part of it
            yield
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if "full" in str(e) or "readonly" in str(e) or "read-only" in str(e):
                raise UsageError(f"data directory: cannot write to {self.root / DB_NAME} ({e}); free space or "
                                 f"make it writable: what was being recorded was not") from None
            raise

    # -- schema ---------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply the pending migrations; returns their names."""
        _adopt_legacy_migrations(self.db)
        pending = [m.name for m in MIGRATIONS.pending(self.db)]
        MIGRATIONS.apply(self.db)
        return pending

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
        row = {"name": name, "path": str(path), "family": family, "parent": parent, "recipe": recipe,
               "round": round, "created": _now()}
        with self._write():
            self.db["models"].upsert(_encode(row), pk="name")
        return row

    def model(self, name: str) -> dict | None:
        """A registered model's row (`recipe` decoded), or None."""
        return _decode(next(self.db.query("SELECT * FROM models WHERE name = ?", [name]), None), "recipe")

    def models(self) -> list[dict]:
        return [_decode(r, "recipe") for r in self.db.query("SELECT * FROM models ORDER BY created, name")]

    # -- generations ----------------------------------------------------------------------------
    def record_generation(self, **fields: Any) -> int:
        with self._write():
            return self.db["generations"].insert(_encode({**fields, "created": _now()})).last_pk

    def generations(self, limit: int = 50) -> list[dict]:
        """The newest generations first, `settings` decoded."""
        return [_decode(r, "settings") for r in
                self.db.query("SELECT * FROM generations ORDER BY id DESC LIMIT ?", [limit])]

    # -- arena: battles and votes -----------------------------------------------------------------
    def add_battle(self, *, prompt: str, seed: int, category: str | None, source: str | None,
                   a_setting: str, b_setting: str, a_image: str, b_image: str, left_side: str) -> dict:
        """Insert a battle (settings as canonical JSON); returns its row, with a fresh opaque token."""
        row = {"token": secrets.token_urlsafe(12), "prompt": prompt, "seed": seed, "category": category,
               "source": source, "a_setting": a_setting, "b_setting": b_setting, "a_image": a_image,
               "b_image": b_image, "left_side": left_side, "rank": secrets.randbelow(2**31), "created": _now()}
        with self._write():
            row["id"] = self.db["battles"].insert(row).last_pk
        return row

    def _one(self, sql: str, params=()) -> dict | None:
        return next(self.db.query(sql, params), None)

    def battle(self, battle_id: int) -> dict | None:
        return self._one("SELECT * FROM battles WHERE id = ?", [battle_id])

    def battle_by_token(self, token: str) -> dict | None:
        return self._one("SELECT * FROM battles WHERE token = ?", [token])

    def battles(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM battles ORDER BY id"))

    def next_unvoted(self, rater: str) -> dict | None:
        """The battle this rater has not voted on from the comparison with the fewest votes (among
        equals, at random), and in it the battle with the fewest votes (among equals, by its random
        rank); None when they have voted on every battle. Bounded work: the comparisons are few,
        and within one the index on (pair, n_votes, rank) is walked past this rater's own votes."""
        for c in self.db.query("SELECT pair FROM comparisons WHERE n_battles > 0 ORDER BY n_votes, random()"):
            battle = self._one(
                "SELECT * FROM battles b WHERE pair = ? AND NOT EXISTS "
                "(SELECT 1 FROM votes v WHERE v.battle_id = b.id AND v.rater = ?) ORDER BY n_votes, rank LIMIT 1",
                [c["pair"], rater])
            if battle is not None:
                return battle
        return None

    def rater_progress(self, rater: str) -> tuple[int, int]:
        """(battles this rater has voted on, battles in all)."""
        voted = self._one("SELECT count(*) AS n FROM votes WHERE rater = ?", [rater])["n"]
        return voted, self._one("SELECT sum(n_battles) AS n FROM comparisons")["n"] or 0

    def comparison_counts(self) -> list[dict]:
        """Per ordered (a_setting, b_setting) pair: how many battles and how many votes."""
        return list(self.db.query(
            "SELECT a_setting, b_setting, count(*) AS n_battles, sum(n_votes) AS n_votes "
            "FROM battles GROUP BY a_setting, b_setting"))

    def serve(self, battle_id: int, rater: str) -> None:
        """Record that the battle is on this rater's screen now (their latest)."""
        with self._write():
            self.db.execute("INSERT OR REPLACE INTO served (battle_id, rater, created) VALUES (?, ?, ?)",
                            [battle_id, rater, _now()])

    def record_vote(self, battle_id: int, rater: str, outcome: str) -> dict:
        """Insert one vote in one short transaction, on a battle served to this rater. A second vote
        by the same rater on the same battle, a battle never served to them, or one that does not
        exist raises UsageError and writes nothing."""
        with self._write():
            cur = self.db.execute(
                "INSERT INTO votes (battle_id, rater, left_setting, right_setting, outcome, after_undo, created) "
                "SELECT id, :rater, CASE left_side WHEN 'a' THEN a_setting ELSE b_setting END, "
                "CASE left_side WHEN 'a' THEN b_setting ELSE a_setting END, :outcome, "
                "EXISTS (SELECT 1 FROM vote_undos u WHERE u.battle_id = :b AND u.rater = :rater), :now "
                "FROM battles WHERE id = :b "
                "AND EXISTS (SELECT 1 FROM served s WHERE s.battle_id = :b AND s.rater = :rater) "
                "ON CONFLICT (battle_id, rater) DO NOTHING",
                {"b": battle_id, "rater": rater, "outcome": outcome, "now": _now()})
            inserted = cur.rowcount
        if inserted == 1:
            return self._one("SELECT * FROM votes WHERE battle_id = ? AND rater = ?", [battle_id, rater])
        if self.battle(battle_id) is None:
            raise UsageError("battle: no such battle (it may have been removed); load the next one")
        if self._one("SELECT 1 AS x FROM served WHERE battle_id = ? AND rater = ?", [battle_id, rater]) is None:
            raise UsageError(f"battle: this battle was not shown to rater {rater!r}; load the next one")
        raise UsageError(f"rater {rater!r} has already voted on this battle: one vote per rater per battle")

    def undo_last_vote(self, rater: str) -> dict | None:
        """Withdraw this rater's most recent vote (kept in vote_undos) while its battle is still the
        latest one served to them; returns it, or None when they have no vote. An earlier vote, or
        the last one once the next battle is on screen, raises UsageError and changes nothing."""
        with self._write():
            vote = self._one("SELECT id, battle_id, rater, outcome, created FROM votes WHERE rater = ? "
                             "ORDER BY id DESC LIMIT 1", [rater])
            if vote is None:
                return None
            latest = self._one("SELECT battle_id FROM served WHERE rater = ? ORDER BY id DESC LIMIT 1", [rater])
            if latest is None or latest["battle_id"] != vote["battle_id"]:
                raise UsageError("undo: only your last vote, before the next battle is loaded")
            self.db["vote_undos"].insert({"battle_id": vote["battle_id"], "rater": rater, "outcome": vote["outcome"],
                                          "voted": vote["created"], "undone": _now()})
            self.db.execute("DELETE FROM votes WHERE id = ?", [vote["id"]])
        return vote

    def votes(self) -> list[dict]:
        """Every vote with its battle's prompt, seed, category and settings, oldest first."""
        return list(self.db.query(
            "SELECT v.id, v.battle_id, b.token AS battle, b.prompt, b.seed, b.category, b.source, v.rater, "
            "v.left_setting, v.right_setting, b.a_setting, b.b_setting, v.outcome, v.after_undo, v.created "
            "FROM votes v JOIN battles b ON b.id = v.battle_id ORDER BY v.id"))

    def vote_count(self) -> int:
        return self.db["votes"].count

    def undo_count(self) -> int:
        return self.db["vote_undos"].count

    # -- jobs (engine/jobs.py) ----------------------------------------------------------------------
    def create_job(self, kind: str, *, name: str, label: str, payload: dict | list, parts: int,
                   part_unit: str, step_unit: str, message: str | None = None,
                   launch_config: str | None = None) -> int:
        """Queue a job: its kind, what it makes or scores, a line saying what it does, its input."""
        with self._write():
            return self.db["jobs"].insert(_encode({
                "kind": kind, "name": name, "label": label, "payload": payload, "status": "queued",
                "device": "auto", "created": _now(), "part": 0, "parts": parts, "part_unit": part_unit,
                "step": 0, "total": 0, "step_unit": step_unit, "resume": 0, "message": message,
                "launch_config": launch_config})).last_pk

    def job(self, job_id: int) -> dict | None:
        """A job's row with `payload` and `models` decoded, or None."""
        return _decode(self._one("SELECT * FROM jobs WHERE id = ?", [job_id]), "payload", "models")

    def jobs(self, kind: str | None = None, limit: int = 100) -> list[dict]:
        """Jobs, newest first (of one kind when given), `payload` and `models` decoded."""
        where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
        return [_decode(r, "payload", "models") for r in
                self.db.query(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?", [*params, limit])]

    def update_job(self, job_id: int, **fields: Any) -> None:
        with self._write():
            self.db["jobs"].update(job_id, _encode(fields))

    def set_job_status(self, job_id: int, status: str, *, only_from: tuple[str, ...] | None = None,
                       **fields: Any) -> bool:
        """Move a job to `status` (optionally only from the given states); True if it moved."""
        if status not in JOB_STATES:
            raise ValueError(f"status must be one of {JOB_STATES}, got {status!r}")
        sets = {"status": status, **_encode(fields)}
        if status not in ("queued", "running"):
            sets.setdefault("finished", _now())
        cols = ", ".join(f"{k} = :{k}" for k in sets)
        where = "id = :job_id" + (f" AND status IN ({', '.join(repr(s) for s in only_from)})" if only_from else "")
        with self._write():
            return self.db.execute(f"UPDATE jobs SET {cols} WHERE {where}", {**sets, "job_id": job_id}).rowcount == 1

    def claim_next_job(self) -> dict | None:
        """Atomically pick the oldest queued job and mark it running, unless one is running already."""
        with self._write():  # the lock from the start: two claimers cannot both see "idle"
            busy = self._one("SELECT 1 AS busy FROM jobs WHERE status = 'running' LIMIT 1")
            row = None if busy else self._one("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1")
            if row:
                # a resumed job starts afresh: no process yet, and nothing left of its last run's pace or phase
                self.db.execute("UPDATE jobs SET status = 'running', started = ?, pid = NULL, error = NULL, "
                                "phase = NULL, rate = NULL, eta = NULL WHERE id = ?", [_now(), row["id"]])
        return self.job(row["id"]) if row else None

    def add_job_metric(self, job_id: int, **fields: Any) -> None:
        with self._write():
            self.db["job_metrics"].insert({"job_id": job_id, "created": _now(), **fields})

    def job_metrics(self, job_id: int) -> list[dict]:
        return list(self.db.query("SELECT * FROM job_metrics WHERE job_id = ? ORDER BY id", [job_id]))

    def add_job_eval(self, job_id: int, **fields: Any) -> None:
        with self._write():
            self.db["job_evals"].insert(_encode({"job_id": job_id, "created": _now(), **fields}))

    def job_evals(self, job_id: int | None = None) -> list[dict]:
        """Each round's quality (`by_category` decoded), of one job or of all."""
        where, params = ("WHERE job_id = ?", [job_id]) if job_id is not None else ("", [])
        return [_decode(r, "by_category") for r in self.db.query(f"SELECT * FROM job_evals {where} ORDER BY id",
                                                                 params)]

    # -- acceleration: cache calibrations and bench runs ----------------------------------------
    def save_calibration(self, model: str, method: str, data: dict) -> None:
        with self._write():
            self.db["calibrations"].upsert(_encode({"model": model, "method": method, "data": data,
                                                    "created": _now()}), pk=("model", "method"))

    def calibration(self, model: str, method: str) -> dict | None:
        row = _decode(self._one("SELECT data FROM calibrations WHERE model = ? AND method = ?", [model, method]),
                      "data")
        return row["data"] if row else None

    def add_bench_run(self, model: str, device: str, config: dict, rows: list[dict]) -> int:
        with self._write():
            return self.db["bench_runs"].insert(_encode({"model": model, "device": device, "config": config,
                                                         "rows": rows, "created": _now()})).last_pk

    def bench_runs(self, model: str | None = None, limit: int = 20) -> list[dict]:
        """Bench runs, newest first, with `config` and `rows` decoded."""
        where, params = ("WHERE model = ?", [model]) if model else ("", [])
        return [_decode(r, "config", "rows") for r in
                self.db.query(f"SELECT * FROM bench_runs {where} ORDER BY id DESC LIMIT ?", [*params, limit])]

    # -- evaluation: cached images, runs, VLM answers ---------------------------------------------------
    def eval_images(self, model_key: str, settings: str, keys: list[tuple[str, int]]) -> dict[tuple[str, int], dict]:
        """The cached images among (prompt, seed) pairs for one model and settings."""
        wanted = set(keys)
        rows = self.db.query("SELECT * FROM eval_images WHERE model_key = ? AND settings = ?", [model_key, settings])
        return {(r["prompt"], r["seed"]): r for r in rows if (r["prompt"], r["seed"]) in wanted}

    def add_eval_images(self, model_key: str, settings: str, rows: list[dict]) -> None:
        with self._write():
            self.db["eval_images"].insert_all(
                [{"model_key": model_key, "settings": settings, "created": _now(), **r} for r in rows],
                ignore=True)

    def add_eval_run(self, *, model: str, teacher: str, golden: str, golden_sha: str, settings: dict, result: dict,
                     items: list[dict], job_id: int | None = None) -> int:
        with self._write():
            run_id = self.db["eval_runs"].insert(_encode({
                "job_id": job_id, "model": model, "teacher": teacher, "golden": golden, "golden_sha": golden_sha,
                "settings": settings, "result": result, "created": _now()})).last_pk
            self.db["eval_items"].insert_all([{"run_id": run_id, **_encode(it)} for it in items])
        return run_id

    def eval_run(self, run_id: int) -> dict | None:
        return _decode(self._one("SELECT * FROM eval_runs WHERE id = ?", [run_id]), "settings", "result")

    def eval_runs(self, model: str | None = None, golden: str | None = None, job_id: int | None = None,
                  limit: int = 200) -> list[dict]:
        """Evaluation runs, newest first, with `settings` and `result` decoded."""
        given = {col: v for col, v in (("model", model), ("golden", golden), ("job_id", job_id)) if v is not None}
        where = ("WHERE " + " AND ".join(f"{col} = :{col}" for col in given)) if given else ""
        return [_decode(r, "settings", "result") for r in
                self.db.query(f"SELECT * FROM eval_runs {where} ORDER BY id DESC LIMIT :limit",
                              {**given, "limit": limit})]

    def eval_items(self, run_id: int) -> list[dict]:
        """A run's per-image rows in order, `missed` and `vlm` decoded."""
        return [_decode(r, "missed", "vlm") for r in
                self.db.query("SELECT * FROM eval_items WHERE run_id = ? ORDER BY idx", [run_id])]

    def update_eval_result(self, run_id: int, result: dict) -> None:
        with self._write():
            self.db["eval_runs"].update(run_id, _encode({"result": result}))

    def vlm_judgment(self, key: str) -> dict | None:
        row = _decode(self._one("SELECT result FROM vlm_judgments WHERE key = ?", [key]), "result")
        return row["result"] if row else None

    def save_vlm_judgment(self, key: str, endpoint: str, model: str, result: dict) -> None:
        with self._write():
            self.db["vlm_judgments"].upsert(_encode({"key": key, "endpoint": endpoint, "model": model,
                                                     "result": result, "created": _now()}), pk="key")
