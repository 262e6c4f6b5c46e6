import sqlite3
import threading

import sqlite_utils

from engine import registry
from engine.store import MIGRATIONS, Store


def test_migrations_are_recorded_and_applied_once(tmp_path):
    s = Store(tmp_path)
    assert [m.name for m in MIGRATIONS.applied(s.db)] == [m.name for m in MIGRATIONS._migrations]
    assert Store(tmp_path).migrate() == []
    assert s.db.journal_mode == "wal"


def test_a_database_of_the_lab_before_sqlite_utils_migrations_is_brought_up_to_date(tmp_path):
    """Data directories made before: their own `migrations` table, and jobs with a recipe column."""
    db = sqlite_utils.Database(sqlite3.connect(tmp_path / "lab.db"))
    old = [m for m in MIGRATIONS._migrations if m.name != "jobs_of_any_kind"]
    for m in old:
        m.fn(db)
    db["migrations"].insert_all([{"name": m.name, "applied": "2026-01-01T00:00:00+00:00"} for m in old])
    db["jobs"].insert({"technique": "guidance", "name": "s", "teacher": "embedded", "recipe": '{"name": "s"}',
                       "status": "succeeded", "created": "2026-01-01", "round": 1, "rounds": 1, "step": 4,
                       "total": 4, "resume": 0, "models": '["s"]'})
    db.conn.commit()
    s = Store(tmp_path)
    assert not s.db["migrations"].exists()
    assert [m.name for m in MIGRATIONS.pending(s.db)] == []
    job = s.jobs()[0]
    assert job["payload"] == {"name": "s"} and job["models"] == ["s"] and job["label"] == "guidance: embedded -> s"
    assert (job["kind"], job["part"], job["parts"], job["part_unit"], job["step_unit"]) == ("distill", 1, 1, "round",
                                                                                           "step")


def test_models_andregister_lineage(memory_store):
    s = memory_store
    s.register_model("g1", "/x/g1", "embedded", parent="teacher", recipe={"technique": "guidance"})
    s.register_model("p1", "/x/p1", "embedded", parent="g1", round=1)
    assert registry.lineage(s, "p1") == ["teacher", "g1", "p1"]  # the root need not be registered
    assert registry.lineage(s, "teacher") == ["teacher"]
    assert s.model("g1")["recipe"] == {"technique": "guidance"}
    assert s.model("nope") is None


def test_shipped_students_have_a_lineage_without_rows_in_the_database(memory_store):
    assert registry.lineage(memory_store, "embedded-4step") == ["embedded", "embedded-guidance", "embedded-4step"]
    assert memory_store.models() == []  # reading wrote nothing


def test_generation_rows_and_opaque_files(tmp_path):
    s = Store(tmp_path)
    path = s.new_file(".png")
    assert path.parent == tmp_path / "images" and len(path.stem) == 24
    gid = s.record_generation(model="embedded", prompt="a star", seed=1, steps=2, guidance=5.0, height=32,
                              width=32, settings={"cache": None}, nfe=4, skipped=0, seconds=0.1,
                              peak_mem_mb=10.0, image=path.name)
    row = s.generations()[0]
    assert row["id"] == gid and row["nfe"] == 4 and row["image"] == path.name and row["settings"] == {"cache": None}


def test_each_thread_gets_its_own_connection(tmp_path):
    s = Store(tmp_path)
    errors = []

    def work(i):
        try:
            s.register_model(f"m{i}", f"/x/{i}", "embedded")
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(s.models()) == 8


def test_processes_opening_a_new_data_directory_at_once_all_get_it(tmp_path):
    """Every process of an `accelerate launch` job opens the data directory at the same moment:
    each one's setup (WAL, migrations) waits for the others', none is refused."""
    import subprocess
    import sys
    import time

    from conftest import ROOT

    start = time.time() + 4  # every process imported and waiting, then all at once
    code = (f"import time; from engine.store import Store; time.sleep(max(0, {start} - time.time())); "
            f"Store({str(tmp_path / 'lab')!r})")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
