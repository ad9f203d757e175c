from PIL import Image

from stages.corpus.demo_corpus import BASE_PHOTOS, build_demo_corpus, load_ground_truth


def test_families_are_on_disk_with_their_transformations(demo_corpus):
    corpus, gt = demo_corpus
    assert set(gt["families"]) == set(BASE_PHOTOS)
    for members in gt["families"].values():
        assert members[0]["transform"] is None
        for m in members:
            assert (corpus / m["file"]).is_file()
        assert all(m["instruction"] for m in members[1:])
    assert load_ground_truth(corpus) == gt
    base = Image.open(corpus / "photos/chelsea/base.png")
    flipped = Image.open(corpus / "photos/chelsea/hflip.jpg")
    assert base.size == flipped.size


def test_build_is_deterministic(tmp_path):
    a = build_demo_corpus(tmp_path / "a")
    b = build_demo_corpus(tmp_path / "b")
    assert a == b
    for rel in a["expected"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_a_complete_corpus_is_kept_and_a_foreign_folder_refused(tmp_path):
    import pytest

    from schemas.config import DemoConfig
    from stages.corpus.demo_corpus import build_demo_corpus

    out = tmp_path / "corpus"
    build_demo_corpus(out, DemoConfig(variants=["hflip"]))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    build_demo_corpus(out, DemoConfig(variants=["hflip"]))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    gt = build_demo_corpus(out, DemoConfig(variants=["hflip", "brighten"]))  # another config: rebuilt
    assert gt["config"]["variants"] == ["hflip", "brighten"] and (out / "photos/coffee/brighten.jpg").exists()
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "mine.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not made by aceforge demo-corpus"):
        build_demo_corpus(foreign)
    assert (foreign / "mine.jpg").read_bytes() == b"x"
