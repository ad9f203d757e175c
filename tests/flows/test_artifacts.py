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
