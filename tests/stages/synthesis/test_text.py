import io
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageFont

from mining.text.ocr import RapidOcrReader, find_font, normalized_edit_distance
from mining.text.confirm import Rules, confirm_hit, inside
from schemas.config import RunConfig
from store import storage
from runtime.executors import LocalExecutor
from stages.corpus.ingest import ingest
from store.shard_reader import read_shard_set
from stages.synthesis.pack import SynthPackStage
from stages.synthesis.text import TextStage

PLAIN = ("astronaut", "coffee", "rocket")
CAPTIONED = (("chelsea", "en", "CAT CAFE"), ("camera", "zh", "欢迎光临"), ("immunohistochemistry", "en", "LAB 42"))


def _photo(name: str) -> Image.Image:
    im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    im.thumbnail((144, 144))
    return im


def _captioned(name: str, script: str, text: str) -> Image.Image:
    """A photo with a caption bar: real text for the removal path."""
    im = _photo(name)
    draw = ImageDraw.Draw(im)
    font = ImageFont.truetype(find_font(script), 18)
    x0, y0, x1, y1 = font.getbbox(text)
    top = im.height - (y1 - y0) - 14
    draw.rectangle((6, top - 4, 6 + x1 - x0 + 8, top + y1 - y0 + 4), fill=(240, 240, 240))
    draw.text((10 - x0, top - y0), text, font=font, fill=(10, 10, 10))
    return im


def _arr(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def ocr():
    r = RapidOcrReader()
    r.setup()
    return r


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("text")
    src = tmp_path / "src"
    src.mkdir()
    for name in PLAIN:
        _photo(name).save(src / f"{name}.png")
    for name, script, text in CAPTIONED:
        _captioned(name, script, text).save(src / f"cap_{name}.png")
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": ["text_removal", "text_addition"], "partition_size": 3, "max_side": 144,
                               "inpainter": "cv2",  # its fills of these boxes are smears (tests/mining/objects/test_smear.py);
                               "verify": {"max_smear_ratio": 1e6}},
                    supervision={"smear_max_ratio": 1e6})  # these tests need removals that pass
    ingest(str(src), cfg.root, cfg.ingest)
    return cfg


def _run(cfg):
    ex = LocalExecutor()
    return ex.run(TextStage(cfg)), ex.run(SynthPackStage(cfg, shard_name="text"))


@pytest.fixture(scope="module")
def ran(cfg):
    return _run(cfg)


@pytest.mark.slow  # one OCR run of the stage on 6 images (~25 s on 2 cores), shared
def test_text_pairs_end_to_end_every_text_free_image_has_no_ocr_detection(cfg, ran, ocr):
    text, pack = ran
    c = text.counts
    assert c["images"] == 6 and c["with_text"] >= 2 and c["without_text"] >= 2  # the captions are read
    assert c["with_text"] == c["samples"]["text_removal"] + sum(
        n for r, n in c["dropped"].items() if r.startswith("text_removal: "))
    assert c["without_text"] == c["samples"]["text_render"] + sum(
        n for r, n in c["dropped"].items() if r.startswith("text_render: "))
    n = c["samples"]["text_removal"] + c["samples"]["text_render"]
    assert c["samples"]["text_removal"] >= 1 and c["samples"]["text_render"] >= 1
    assert pack.counts["counts_by_task"] == {"text_removal": n, "text_addition": n}
    by_key = {}
    for s in read_shard_set(pack.counts["uri"]):
        edit, target, mask = _arr(s.units[0].image), _arr(s.target.image), _arr(s.units[0].mask) > 0
        if mask.ndim == 3:
            mask = mask[..., 0]
        assert mask.any() and not mask.all() and "{image}" in s.instruction
        assert '"' in s.instruction or s.task == "text_removal"  # an addition names its content
        assert np.array_equal(edit[~mask], target[~mask]), s.key  # only the text's region differs
        assert s.lineage.generators[0].name == "rapidocr-ppocrv6"
        assert s.lineage.labels["text"] and s.lineage.labels["position"]  # what the text and its place were
        if s.task == "text_addition":
            assert s.lineage.labels["text"] in s.instruction
        if s.task == "text_removal":  # (an addition is its exact reverse, checked below)
            # the image without text: OCR reads nothing in the mask, and nothing it confirms elsewhere
            assert not [h for h in ocr(target) if inside(h, mask) or confirm_hit(ocr, target, h, Rules())[0] is None]
            assert ocr(edit), s.key  # the one with text: OCR finds some
            if "readback_ned" not in s.lineage.scores:  # found text: confirmed by a second read
                assert s.lineage.scores["reread_ned_max"] <= cfg.synthesis.text.confirm_max_ned
        by_key[s.key] = (edit, target)
        if "readback_ned" in s.lineage.scores:  # rendered: the instruction names content, colour, position
            assert s.lineage.scores["readback_ned"] <= cfg.synthesis.text.max_ned
    for key, (edit, target) in by_key.items():  # addition is the exact reverse of removal
        if key.startswith("text_removal-"):
            a_edit, a_target = by_key[key.replace("text_removal-", "text_addition-")]
            assert np.array_equal(a_edit, target) and np.array_equal(a_target, edit)


@pytest.mark.slow  # one OCR run of the stage on 6 images (~25 s on 2 cores), shared
def test_rendered_text_reads_back_and_the_instruction_names_it(ran):
    text, pack = ran
    rendered = [s for s in read_shard_set(pack.counts["uri"])
                if s.task == "text_addition" and "readback_ned" in s.lineage.scores]
    assert rendered
    ocr = RapidOcrReader(min_chars=1)  # an OCR run of its own on the packed image, not the stage's score
    for s in rendered:
        content = s.instruction.split('"')[1]
        read = "".join(h.text for h in ocr(_arr(s.target.image)))
        assert len(content) >= 2 and normalized_edit_distance(read.replace(" ", ""), content.replace(" ", "")) <= 0.1
        assert any(w in s.instruction for w in ("top", "bottom", "left", "right", "center"))


@pytest.mark.slow  # one OCR run of the stage on 6 images (~25 s on 2 cores), shared
def test_a_rerun_rewrites_nothing(cfg, ran):
    first = ran
    root = storage.fs_path(cfg.root)[1]
    files = lambda: {p: p.stat().st_mtime_ns for p in Path(root).rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    again = _run(cfg)
    assert [r.counts for r in again] == [r.counts for r in first] and files() == before


@pytest.mark.slow  # one OCR run of the stage on 6 images (~25 s on 2 cores), shared
def test_counts_that_do_not_reconcile_stop_the_stage(cfg, ran):
    stage = TextStage(cfg)
    part = stage.parts()[0]
    marker = storage.read_marker(part)
    marker["counts"]["with_text"] += 1
    storage.write_marker(part, marker)
    fs, path = storage.fs_path(stage.final_outputs()[0])
    fs.rm(path)
    with pytest.raises(RuntimeError, match="do not reconcile"):
        stage.finalize(stage.plan())
    assert storage.read_marker(stage.out) is None


def test_max_images_cuts_the_items(cfg):
    capped = cfg.model_copy(update={"synthesis": cfg.synthesis.model_copy(
        update={"text": cfg.synthesis.text.model_copy(update={"max_images": 4})})})
    stage = TextStage(capped)
    assert stage._ranges() == [(0, 3), (3, 4)]


def test_texture_read_as_text_is_not_a_removal_candidate(cfg, ocr):
    """The camera's tripod reads as '0000': the image is dropped as text_unconfirmed, before any inpainting."""
    img = np.asarray(Image.fromarray(skimage.data.camera()).convert("RGB"))
    hits = ocr(img)
    assert hits and all(h.score >= cfg.synthesis.text.min_score for h in hits)
    stage = TextStage(cfg)
    stage.setup()
    assert stage._removal(None, img, hits) == (None, "text_unconfirmed")
