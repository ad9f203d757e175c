from PIL import Image

from tasks.demo_corpus import BASE_PHOTOS, build_demo_corpus, load_ground_truth


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
