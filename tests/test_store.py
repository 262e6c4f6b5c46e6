import threading

from engine.store import MIGRATIONS, Store


def test_migrations_are_recorded_and_applied_once(tmp_path):
    s = Store(tmp_path)
    assert [r["name"] for r in s.db["migrations"].rows] == [m[0] for m in MIGRATIONS]
    assert Store(tmp_path).migrate() == []
    assert s.db.journal_mode == "wal"


def test_models_and_lineage(memory_store):
    s = memory_store
    s.register_model("teacher", "/x/t", "embedded")
    s.register_model("g1", "/x/g1", "embedded", parent="teacher", recipe={"technique": "guidance"})
    s.register_model("p1", "/x/p1", "embedded", parent="g1", round=1)
    assert [m["name"] for m in s.lineage("p1")] == ["teacher", "g1", "p1"]
    assert s.model("g1")["recipe"] == '{"technique": "guidance"}'
    assert s.model("nope") is None


def test_generation_rows_and_opaque_files(tmp_path):
    s = Store(tmp_path)
    path = s.new_file(".png")
    assert path.parent == tmp_path / "images" and len(path.stem) == 24
    gid = s.record_generation(model="embedded", prompt="a star", seed=1, steps=2, guidance=5.0, height=32,
                              width=32, settings={"cache": None}, nfe=4, skipped=0, seconds=0.1,
                              peak_mem_mb=10.0, image=path.name)
    row = s.generations()[0]
    assert row["id"] == gid and row["nfe"] == 4 and row["image"] == path.name


def test_each_thread_gets_its_own_connection(tmp_path):
    s = Store(tmp_path)
    errors = []

    def work(i):
        try:
            s.register_model(f"m{i}", f"/x/{i}", "embedded")
        except Exception as e:  # noqa: BLE001 - the test reports any failure
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(s.models()) == 8
