import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.lock import LOCK, RootBusy, RootLock

REPO = Path(__file__).resolve().parents[2]


def test_a_second_run_on_a_root_is_refused_naming_the_holder(tmp_path):
    root = str(tmp_path / "root")
    with RootLock(root, "a mining run of /photos"):
        with pytest.raises(RootBusy, match=r"in use by a mining run of /photos \(pid \d+ on .+ since .+\)"):
            RootLock(root, "another").acquire()
    assert not (tmp_path / "root" / LOCK).exists()  # given back
    with RootLock(root, "another"):  # free again
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over_and_a_foreign_one_is_kept(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "root" / LOCK
    lock.parent.mkdir()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "what": "a killed run"}))
    with RootLock(str(tmp_path / "root"), "me"):
        assert json.loads(lock.read_text())["what"] == "me"
    lock.write_text(json.dumps({"host": "another-host", "pid": 1, "what": "a run elsewhere"}))
    with pytest.raises(RootBusy, match="a run elsewhere"):
        RootLock(str(tmp_path / "root"), "me").acquire()
    assert json.loads(lock.read_text())["what"] == "a run elsewhere"  # not ours: left where it is


def test_aceforge_ingest_on_a_busy_root_ends_in_one_line(tmp_path):
    from stages.corpus.demo_corpus import generate_variants

    generate_variants(tmp_path / "src", 2)
    root = str(tmp_path / "root")
    with RootLock(root, "a mining run of /photos"):
        done = subprocess.run([str(Path(sys.executable).parent / "aceforge"), "ingest", str(tmp_path / "src"),
                               "--root", root], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("ingest failed:") and "in use by a mining run of /photos" in last
    assert not (tmp_path / "root" / "catalog").exists()


def test_an_empty_lock_left_by_a_crash_is_taken_over_once_old(tmp_path):
    import os
    import time

    lock = tmp_path / "root" / LOCK
    lock.parent.mkdir()
    lock.write_text("")  # a crash between the exclusive create and the write
    with pytest.raises(RootBusy):  # fresh: maybe a run writing it right now
        RootLock(str(tmp_path / "root"), "me").acquire()
    old = time.time() - 120
    os.utime(lock, (old, old))
    with RootLock(str(tmp_path / "root"), "me"):
        assert json.loads(lock.read_text())["what"] == "me"
