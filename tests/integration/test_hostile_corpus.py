"""A standing bad-input suite: a hostile corpus through `aceforge mine`, the way a user runs it. Every file is
accounted for (accepted, duplicate or quarantined with a reason, or not read and counted by reason), counts reconcile, the exit code is 0,
nothing hangs (a timeout), and nothing is written outside the root."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from stages.corpus.demo_corpus import _bomb_png, generate_variants

REPO = Path(__file__).resolve().parents[2]


def _img(mode="RGB", size=(96, 80), fmt="PNG", **kw) -> bytes:
    rng = np.random.default_rng(len(mode) + size[0])
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode) if mode not in ("I;16",) else \
        Image.fromarray((arr[..., 0].astype(np.uint16) * 257))
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (90, 90), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def _hostile(src: Path) -> dict[str, str]:
    """Writes the corpus; returns {name: what must happen} for every input (tar members as tar/member)."""
    generate_variants(src, 4)
    good = (src / "000000.jpg").read_bytes()
    files = {
        "empty.jpg": "quarantined", "truncated.jpg": "quarantined", "bomb.png": "quarantined",
        "hash#name.jpg": "accepted", "фото-写真.jpg": "accepted", ("l" * 200) + ".jpg": "accepted",
        "anim.gif": "accepted", "anim.webp": "accepted", "cmyk.jpg": "accepted", "sixteen.png": "accepted",
        "palette.png": "accepted", "alpha.png": "accepted", "exif.jpg": "accepted", "copy.jpg": "duplicate",
        "text.jpg": "quarantined",
    }
    (src / "empty.jpg").write_bytes(b"")
    (src / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (src / "bomb.png").write_bytes(_bomb_png(40000, 40000))
    (src / "hash#name.jpg").write_bytes(_img(size=(97, 81), fmt="JPEG"))
    (src / "фото-写真.jpg").write_bytes(_img(size=(98, 82), fmt="JPEG"))
    (src / (("l" * 200) + ".jpg")).write_bytes(_img(size=(99, 83), fmt="JPEG"))
    (src / "anim.gif").write_bytes(_animated("GIF"))
    (src / "anim.webp").write_bytes(_animated("WEBP"))
    (src / "cmyk.jpg").write_bytes(_img("CMYK", size=(100, 84), fmt="JPEG"))
    (src / "sixteen.png").write_bytes(_img("I;16", size=(101, 85)))
    (src / "palette.png").write_bytes(_img("P", size=(102, 86)))
    (src / "alpha.png").write_bytes(_img("RGBA", size=(103, 87)))
    exif = Image.Exif()
    exif[0x0112] = 6
    (src / "exif.jpg").write_bytes(_img(size=(104, 88), fmt="JPEG", exif=exif))
    (src / "copy.jpg").write_bytes(good)
    (src / "text.jpg").write_bytes(b"not an image at all\n" * 20)
    (src / "photo.avif").write_bytes(_img(size=(109, 93), fmt="AVIF"))  # Pillow decodes it: listed and read
    files["photo.avif"] = "accepted"
    (src / "notes.txt").write_text("not an image, and not read: counted as skipped\n")
    (src / "LICENSE").write_text("no ending\n")
    os.mkfifo(src / "fifo.jpg")
    files["fifo.jpg"] = "quarantined"
    os.symlink("/nonexistent/target.jpg", src / "dangling.jpg")
    files["dangling.jpg"] = "quarantined"
    (src / "loop").mkdir()
    os.symlink("..", src / "loop" / "up")  # a symlink loop: never followed
    with tarfile.open(src / "evil.tar", "w") as tar:
        for name, data in (("../escape.jpg", _img(size=(105, 89), fmt="JPEG")),
                           ("/abs/path.jpg", _img(size=(106, 90), fmt="JPEG")),
                           ("ok.jpg", _img(size=(107, 91), fmt="JPEG")), ("ok.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    files.update({"evil.tar/../escape.jpg": "accepted", "evil.tar//abs/path.jpg": "accepted",
                  "evil.tar/ok.jpg": "accepted"})
    with tarfile.open(src / "cut.tar", "w") as tar:
        for i in range(3):
            data = _img(size=(108 + i, 92), fmt="PNG")
            info = tarfile.TarInfo(f"m{i}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = (src / "cut.tar").read_bytes()
    (src / "cut.tar").write_bytes(data[: len(data) // 2])
    with open(os.fsencode(src) + b"/bad\xffname.jpg", "wb") as f:
        f.write(_img(size=(110, 94), fmt="JPEG"))
    files["bad\\xffname.jpg"] = "quarantined"  # its name is not UTF-8: named with \xff, never read
    (src.parent / "outside.jpg").write_bytes(_img(size=(111, 95), fmt="JPEG"))
    os.symlink(src.parent / "outside.jpg", src / "out-link.jpg")
    files["out-link.jpg"] = "quarantined"  # a link out of the source: never read
    with tarfile.open(src / "packed.tar.gz", "w:gz") as tar:  # members read by every stage through its index
        for i in range(2):
            data = _img(size=(112 + i, 96), fmt="JPEG")
            info = tarfile.TarInfo(f"g{i}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            files[f"packed.tar.gz/g{i}.jpg"] = "accepted"
    for i in range(4):
        files[f"{i:06d}.jpg"] = "accepted"
    return files


def _name(uri: str, src: Path) -> str:
    from store.sources import split_member

    parts = split_member(uri)
    if parts:
        return f"{Path(parts[0]).name}/{parts[1]}"
    return str(Path(uri).relative_to(src))


def test_a_hostile_corpus_is_accounted_for_and_mined(tmp_path):
    from stages.corpus.ingest import load_catalog, load_quarantine

    src, root = tmp_path / "src", tmp_path / "root"
    expected = _hostile(src)
    outside = set(os.listdir(tmp_path))
    done = subprocess.run([str(Path(sys.executable).parent / "aceforge"), "mine", str(src), "--root", str(root)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert ": reconciled" in done.stdout and "seen " in done.stdout  # mine prints ingest's reconciliation line
    assert set(os.listdir(tmp_path)) == outside | {"root"}  # nothing beside the root
    assert not list(tmp_path.rglob("escape.jpg")) and not Path("/abs/path.jpg").exists()

    marker = json.loads((root / "catalog" / "_SUCCESS.json").read_text())["counts"]
    assert marker["seen"] == marker["accepted"] + marker["duplicates"] + sum(marker["quarantined"].values())
    got = {_name(r.uri, src): "accepted" for r in load_catalog(str(root))}
    got.update({_name(q.uri, src): "quarantined" for q in load_quarantine(str(root))})
    import pyarrow.parquet as pq

    dups = pq.read_table(root / "catalog" / "duplicates.parquet").column("uri").to_pylist()
    got.update({_name(u, src): "duplicate" for u in dups})
    cut = {k for k in got if k.startswith("cut.tar/")}
    assert any("<after" in k for k in cut) and got.pop(next(k for k in cut if "<after" in k)) == "quarantined"
    for k in [k for k in got if k.startswith("cut.tar/")]:
        assert got.pop(k) == "accepted"  # members before the break are kept
    # the duplicate pair: which URI is kept depends on the sort; one of the two is the duplicate
    pair = {got.pop("copy.jpg"), got.pop("000000.jpg")}
    expected.pop("copy.jpg"), expected.pop("000000.jpg")
    assert pair == {"accepted", "duplicate"}
    assert got == expected
    assert marker["quarantined"].get("not_a_file") == 1 and marker["quarantined"].get("too_large") == 1
    assert marker["quarantined"].get("undecodable_name") == 1
    assert marker["quarantined"].get("symlink_outside_source") == 2  # out-link.jpg, dangling.jpg
    # what is listed but never read is counted, with its reason
    assert marker["skipped"] == {"file .txt": 1, "file (no ending)": 1, "not a regular file (a link to a folder?)": 1,
                                 "tar member .json": 1, "tar member not a regular file": 1}
    assert (root / "shards" / "mined-general_editing" / "_SUCCESS.json").exists()  # mined through to shards
