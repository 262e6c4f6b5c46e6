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


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("001_models_generations", _m001_models_generations),
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
