import os

from store import storage


def test_atomic_write_marker_and_stale_tmp_cleanup(tmp_path):
    d = str(tmp_path / "stage")
    assert storage.read_marker(d) is None
    storage.atomic_write_bytes(storage.join(d, "a.bin"), b"abc")
    assert (tmp_path / "stage" / "a.bin").read_bytes() == b"abc"
    assert not [n for n in os.listdir(d) if storage.TMP_TAG in n]
    stale = tmp_path / "stage" / f"b.tar{storage.TMP_TAG}1234"
    stale.write_bytes(b"half")
    assert storage.remove_stale_tmp(d) == [str(stale)] and not stale.exists()
    storage.write_marker(d, {"n": 3})
    assert storage.read_marker(d) == {"n": 3}


def test_memory_filesystem_round_trip():
    uri = "memory://aceforge-test/stage"
    storage.atomic_write_bytes(storage.join(uri, "x.bin"), b"hello")
    fs, path = storage.fs_path(storage.join(uri, "x.bin"))
    assert fs.cat(path) == b"hello"
    storage.write_marker(uri, {"ok": True})
    assert storage.read_marker(uri) == {"ok": True}
