from pathlib import Path

from PIL import Image

from tasks.demo_corpus import BASE_PHOTOS, build_demo_corpus, load_ground_truth
from tasks.ingest import ingest, load_catalog
from tasks.pack import demo_pair_samples


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


def test_pair_samples_link_catalog_ids_and_name_their_generator(demo_corpus, tmp_path):
    corpus, gt = demo_corpus
    root = str(tmp_path / "root")
    ingest(str(corpus / "photos"), root)
    catalog = load_catalog(root)
    ids = {str(Path(r.uri)): r.id for r in catalog}
    samples = list(demo_pair_samples(corpus, catalog))
    assert len(samples) == sum(len(m) - 1 for m in gt["families"].values())
    s = next(x for x in samples if x.key == "rocket-hflip")
    assert s.lineage.source_ids == [ids[str(corpus / "photos/rocket/base.png")], ids[str(corpus / "photos/rocket/hflip.jpg")]]
    assert [g.name for g in s.lineage.generators] == ["demo-ground-truth", "transform:hflip"]
    assert s.lineage.scores == {} and s.task == "general_editing" and "{image}" in s.instruction
