import io
import shutil
import tarfile
from pathlib import Path

import pytest

from schemas.config import IngestConfig
from stages.corpus.ingest import ingest, load_catalog, load_quarantine
from store import storage
from store.sources import split_member


def _outcomes(corpus: Path, root: str) -> dict[str, dict]:
    got: dict[str, dict] = {}
    for r in load_catalog(root):
        got[str(Path(r.uri).relative_to(corpus))] = {"outcome": "accepted", "mode": r.mode, "size": (r.width, r.height)}
    for q in load_quarantine(root):
        got[str(Path(q.uri).relative_to(corpus))] = {"outcome": "quarantined", "reason": q.reason.value}
    dups = storage.read_parquet(storage.join(root, "catalog", "duplicates.parquet")).to_pylist()
    for d in dups:
        got[str(Path(d["uri"]).relative_to(corpus))] = {"outcome": "duplicate",
                                                        "of": str(Path(d["duplicate_of"]).relative_to(corpus))}
    return got


def test_demo_corpus_outcomes_match_ground_truth(demo_corpus, tmp_path):
    corpus, gt = demo_corpus
    root = str(tmp_path / "root")
    report = ingest(str(corpus), root, IngestConfig(workers=2, chunk_size=8))
    assert report.reconciles and report.seen == len(gt["expected"])
    got = _outcomes(corpus, root)
    assert set(got) == set(gt["expected"])
    for name, want in gt["expected"].items():
        assert got[name]["outcome"] == want["outcome"], name
        if "reason" in want:
            assert got[name]["reason"] == want["reason"], name
        if "mode" in want:
            assert got[name]["mode"] == want["mode"], name
        if "of" in want:
            assert got[name]["of"] == want["of"]
        if "display_size" in want:
            assert list(got[name]["size"]) == want["display_size"]
    marker = storage.read_marker(storage.join(root, "catalog"))
    assert marker["counts"]["seen"] == report.seen


def test_parallel_and_serial_agree(demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    ingest(str(corpus), str(tmp_path / "a"), IngestConfig(workers=1))
    ingest(str(corpus), str(tmp_path / "b"), IngestConfig(workers=2, chunk_size=3))
    assert load_catalog(str(tmp_path / "a")) == load_catalog(str(tmp_path / "b"))
    assert load_quarantine(str(tmp_path / "a")) == load_quarantine(str(tmp_path / "b"))


def test_rerun_is_a_noop_and_a_different_source_is_refused(demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    root = str(tmp_path / "root")
    first = ingest(str(corpus / "photos"), root, IngestConfig(workers=1))
    again = ingest(str(corpus / "photos"), root, IngestConfig(workers=1))
    assert again.skipped_existing and again.to_dict() == first.to_dict()
    with pytest.raises(RuntimeError, match="already holds a catalog"):
        ingest(str(corpus / "odd"), root, IngestConfig(workers=1))
    forced = ingest(str(corpus / "odd"), root, IngestConfig(workers=1), force=True)
    assert forced.accepted == 5 and len(load_catalog(root)) == 5


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tar.addfile(ti, io.BytesIO(data))


def test_tar_source_keeps_members_before_a_truncation(demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    good = [(corpus / f"photos/{n}/base.png").read_bytes() for n in ("coffee", "rocket", "chelsea")]
    whole, cut = tmp_path / "src/whole.tar", tmp_path / "src/cut.tar"
    whole.parent.mkdir()
    with tarfile.open(whole, "w") as tar:
        _add(tar, "a.png", good[0])
        _add(tar, "a.json", b"{}")
        _add(tar, "b.png", b"not an image at all")
        _add(tar, "c.png", good[1])
    with tarfile.open(cut, "w") as tar:
        _add(tar, "d.png", good[2])
        _add(tar, "e.png", good[1])
    data = cut.read_bytes()
    cut.write_bytes(data[: 512 + len(good[2]) + 512 + 700])  # ends inside e.png
    report = ingest(str(tmp_path / "src"), str(tmp_path / "root"), IngestConfig(workers=2))
    assert report.reconciles
    accepted = {split_member(r.uri)[1] for r in load_catalog(str(tmp_path / "root"))}
    assert accepted == {"a.png", "c.png", "d.png"}
    reasons = {(split_member(q.uri)[0].rsplit("/", 1)[1], split_member(q.uri)[1]): q.reason.value
               for q in load_quarantine(str(tmp_path / "root"))}
    assert reasons[("whole.tar", "b.png")] == "not_an_image"
    assert reasons[("cut.tar", "<after d.png>")] == "bad_archive"


def test_list_source_with_missing_and_oversized_files(demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    big = corpus / "photos/hubble/base.png"
    lst = tmp_path / "list.txt"
    lst.write_text(f"{corpus}/photos/coffee/base.png\n{tmp_path}/gone.jpg\n{big}\n")
    cfg = IngestConfig(workers=1, max_bytes=big.stat().st_size - 1)
    if (corpus / "photos/coffee/base.png").stat().st_size >= big.stat().st_size:
        pytest.fail("fixture assumption: hubble base must be the larger file")
    report = ingest(str(lst), str(tmp_path / "root"), cfg)
    assert report.accepted == 1 and report.quarantined == {"read_error": 1, "too_many_bytes": 1}


def test_a_good_image_is_never_lost_next_to_bad_ones(demo_corpus, tmp_path):
    corpus, gt = demo_corpus
    mixed = tmp_path / "mixed"
    shutil.copytree(corpus / "bad", mixed)
    shutil.copy(corpus / "photos/flower/base.png", mixed / "flower.png")
    report = ingest(str(mixed), str(tmp_path / "root"), IngestConfig(workers=2, chunk_size=2))
    assert report.accepted == 1 and report.quarantined_total == 8 and report.reconciles


def test_partitions_are_items_and_a_changed_plan_discards_old_ones(demo_corpus, tmp_path):
    from stages.corpus.ingest import finalize_ingest, ingest_partition, plan_ingest

    corpus, gt = demo_corpus
    root = str(tmp_path / "root")
    cfg = IngestConfig(workers=1, chunk_size=4, partition_files=20)
    n = plan_ingest(str(corpus), root, cfg)
    assert n == -(-len(gt["expected"]) // 20)
    seen = [ingest_partition(root, k, cfg) for k in range(n)]
    assert sum(seen) == len(gt["expected"]) and ingest_partition(root, 0, cfg) == -1  # done: skipped
    rep = finalize_ingest(root, n)
    assert rep.reconciles and rep.seen == len(gt["expected"])
    whole = ingest(str(corpus), str(tmp_path / "whole"), IngestConfig(workers=1))
    assert rep.to_dict() | {"catalog_uri": ""} == whole.to_dict() | {"catalog_uri": ""}
    other = tmp_path / "other"
    shutil.copytree(corpus / "odd", other)
    n2 = plan_ingest(str(other), str(tmp_path / "root2"), cfg)
    ingest_partition(str(tmp_path / "root2"), 0, cfg)
    plan_ingest(str(corpus / "bad"), str(tmp_path / "root2"), cfg)  # a new plan: the old partition goes
    assert ingest_partition(str(tmp_path / "root2"), 0, cfg) == 8 and n2 == 1


def test_a_fifo_in_the_source_is_counted_never_opened(tmp_path):
    """A FIFO named like an image used to block ingest forever (open waits for a writer)."""
    import os
    import subprocess
    import sys

    from stages.corpus.demo_corpus import generate_variants

    src = tmp_path / "src"
    generate_variants(src, 3)
    os.mkfifo(src / "pipe.jpg")
    code = ("import sys; from stages.corpus.ingest import ingest; "
            f"r = ingest({str(src)!r}, {str(tmp_path / 'root')!r}); print(r.to_dict())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'accepted': 3" in done.stdout and "'not_a_file': 1" in done.stdout
    (bad,) = load_quarantine(str(tmp_path / "root"))
    assert bad.uri.endswith("pipe.jpg") and bad.reason.value == "not_a_file"


def test_a_local_file_with_a_hash_in_its_name_is_an_image_like_any_other(tmp_path):
    import fsspec

    from stages.corpus.demo_corpus import generate_variants
    from store.sources import member_uri

    (path,) = generate_variants(tmp_path / "src", 1)
    odd = path.rename(path.with_name("ab12#cd.jpg"))
    with tarfile.open(tmp_path / "src" / "t.tar", "w") as tar:
        tar.add(odd, arcname="in#tar.jpg")
    report = ingest(str(tmp_path / "src"), str(tmp_path / "root"))
    assert (report.accepted, report.duplicates, report.quarantined_total) == (1, 1, 0)
    uris = {r.uri for r in load_catalog(str(tmp_path / "root"))}
    assert uris == {str(odd)}  # the tar member is its duplicate (same bytes, later URI)
    member = member_uri(str(tmp_path / "src" / "t.tar"), "in#tar.jpg")
    with fsspec.open(member, "rb") as f:  # the member URI is fsspec's own chained form
        assert f.read() == odd.read_bytes()


def test_default_extensions_are_every_format_pillow_decodes():
    from mining.image.decode import pillow_extensions
    from stages.corpus.ingest import image_extensions

    exts = set(image_extensions(IngestConfig()))
    assert exts == set(pillow_extensions())
    assert {"jpg", "jpeg", "png", "webp", "gif", "tif", "bmp", "avif", "jp2", "tga", "qoi", "psd"} <= exts
    assert not exts & {"h5", "hdf", "bufr", "grib", "wmf", "mpg", "txt", "json"}  # stubs, video, text
    assert image_extensions(IngestConfig(extensions=["png"])) == ["png"]


def test_another_worker_count_or_partition_size_reuses_the_catalog(demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    root = str(tmp_path / "root")
    first = ingest(str(corpus / "photos"), root, IngestConfig(workers=1))
    again = ingest(str(corpus / "photos"), root, IngestConfig(workers=2, chunk_size=3, partition_files=5))
    assert again.skipped_existing and again.to_dict() == first.to_dict()
    with pytest.raises(RuntimeError, match="already holds a catalog"):  # what decides the content still counts
        ingest(str(corpus / "photos"), root, IngestConfig(workers=1, min_side=8))


def test_a_name_that_is_not_utf8_is_quarantined_and_the_rest_ingests(tmp_path):
    """`bad\\xffname.jpg` used to fail ingest (a lone surrogate reached parquet) without naming the file, and
    plan.json kept the name, so removing the file did not help."""
    import json
    import os

    from stages.corpus.demo_corpus import generate_variants

    src = tmp_path / "src"
    a, b, c = generate_variants(src, 3)
    bad = os.fsencode(src) + b"/bad\xffname.jpg"
    os.rename(os.fsencode(a), bad)
    with tarfile.open(src / "t.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(c, arcname=os.fsdecode(b"in\xfftar.jpg"))  # the member's name is the raw byte 0xff
        tar.add(b, arcname="ok.jpg")  # a duplicate of b.jpg
    root = str(tmp_path / "root")
    report = ingest(str(src), root, IngestConfig(workers=1))
    assert report.to_dict()["quarantined"] == {"undecodable_name": 2}
    assert (report.seen, report.accepted, report.duplicates) == (5, 2, 1) and report.reconciles
    uris = sorted(q.uri for q in load_quarantine(root))
    assert uris[0].endswith("/bad\\xffname.jpg") and "in\\xfftar.jpg::" in uris[1]  # printable, byte named
    for text in [(tmp_path / "root/catalog/plan.json").read_text(), json.dumps(storage.read_marker(f"{root}/catalog"))]:
        assert "udcff" not in text.lower() and "\udcff" not in json.loads(text).__repr__()
    os.remove(bad)
    os.remove(src / "t.tar")
    again = ingest(str(src), root, IngestConfig(workers=1))  # the name left in the plan is harmless
    assert again.reconciles and again.accepted == 2


def test_a_link_out_of_the_source_is_quarantined_unread_unless_configured(tmp_path):
    """A link to a file outside a folder source (/etc/passwd) used to be read, its first bytes printed in the
    quarantine detail."""
    import os

    from stages.corpus.demo_corpus import generate_variants

    src, outside = tmp_path / "src", tmp_path / "outside"
    (real,) = generate_variants(src / "sub", 1)
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"TOPSECRET: not an image at all")
    os.symlink(outside / "secret.jpg", src / "link.jpg")
    os.symlink(os.path.relpath(real, src), src / "inside.jpg")  # a link within the source is followed
    root = str(tmp_path / "root")
    report = ingest(str(src), root, IngestConfig(workers=1))
    assert report.to_dict()["quarantined"] == {"symlink_outside_source": 1}
    assert (report.accepted, report.duplicates) == (1, 1) and report.reconciles
    (q,) = load_quarantine(root)
    assert q.uri == str(src / "link.jpg") and "TOPSEC" not in q.detail
    opened = ingest(str(src), str(tmp_path / "r2"), IngestConfig(workers=1, follow_symlinks_outside=True))
    assert opened.to_dict()["quarantined"] == {"not_an_image": 1}
    (q,) = load_quarantine(str(tmp_path / "r2"))
    assert "TOPSEC" not in q.detail  # contents are never stored, not even the first bytes
