import base64
import io

from PIL import Image

from flows.artifacts import THUMB, artifact_key, thumbnail
from stages.corpus.ingest import load_catalog


def test_artifact_keys_are_what_prefect_accepts():
    assert artifact_key("Pairs: general_editing / v2") == "pairs--general-editing---v2"
    assert artifact_key("ünï") == "n"
    assert len(artifact_key("x" * 300)) == 100


def test_thumbnails_are_small_inline_jpegs(embedded):
    root, _ = embedded
    rec = max(load_catalog(root), key=lambda r: r.width * r.height)
    uri = thumbnail(rec)
    assert uri.startswith("data:image/jpeg;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert im.format == "JPEG" and max(im.size) == THUMB


def test_ui_rows_are_one_strip_and_wrapped_text_with_masks_made_visible(monkeypatch):
    import json

    import numpy as np

    import flows.artifacts as fa

    rng = np.random.default_rng(0)

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    labels = np.zeros((300, 400), np.uint8)
    labels[:, 200:300], labels[:, 300:] = 1, 2  # a multi-condition mask: group labels, not 0/255
    photo = png(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    seen = {}
    monkeypatch.setattr(fa, "create_markdown_artifact", lambda text, key, description: seen.update(text=text))
    long = "Replace the sign that reads 'OPEN ALL NIGHT' with one that reads 'CLOSED ON SUNDAYS' in {image}. " * 3
    fa.synth_report([{"edit_png": photo, "mask_png": png(labels), "target_png": photo,
                      "instructions": json.dumps({"text_removal": long}), "scores": json.dumps({"smear": 0.1}),
                      "generators": json.dumps([["lama", "1"], ["paddleocr", "2"]])}], "t", "k")
    row = [r for r in seen["text"].splitlines() if r.startswith("| ![")][0]
    assert row.count(" | ") == 1 and row.count("data:image/") == 1  # two columns: the strip and the text
    cell = row.split(" | ")[1]
    assert max(len(line) for line in cell.replace("*", "").split("<br>")) <= fa.WRAP + len("text_removal: ")
    uri = row.split("](", 1)[1].split(")", 1)[0]
    im = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("L"))
    assert im.shape[0] == fa.STRIP_SIDE and im.shape[1] < 700  # narrower than the UI's pane
    w = round(400 * fa.STRIP_SIDE / 300)
    mask = im[:, w + 3: 2 * w + 3]
    assert mask[:, : w // 3].mean() < 20 and mask[:, -w // 6:].mean() > 230  # label 2 shows white, not black


def test_a_landed_shard_set_shows_its_counts_and_links_its_report(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import flows.reports as fr

    tables, links = {}, []
    monkeypatch.setattr(fr, "counts_table", lambda title, rows, key: tables.update({key: rows}))
    monkeypatch.setattr(fr, "report_link", lambda name, uri, key: links.append(uri))
    counts = {"uri": str(tmp_path), "samples": 7, "shards": 2, "bytes": 3 << 20, "kept_shards": 1,
              "counts_by_task": {"inpainting": 5, "outpainting": 2}, "supervision_dropped": {"inpainting": {"smear": 1}}}
    stage, rep = SimpleNamespace(params={"shard_name": "s"}), SimpleNamespace(counts=counts)
    fr._landed(fr.ReportContext(None, []), stage, rep, True)
    assert tables["shards-s"]["samples: outpainting"] == 2 and tables["shards-s"]["MiB"] == 3.0
    assert tables["supervision-s"] == {"inpainting: smear": 1} and links == []  # no report.html: no link
    (tmp_path / "report.html").write_text("<html></html>")
    fr._landed(fr.ReportContext(None, []), stage, rep, True)
    assert links == [str(tmp_path / "report.html")]
