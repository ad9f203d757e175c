import io

import numpy as np
from PIL import Image

from schemas.config import ShardConfig
from tasks.export_ace import SEP, export_ace_plus
from tasks.shards import write_shard_set
from tests.conftest import make_sample


def test_export_writes_the_official_list_with_images_beside_it(samples, tmp_path):
    rng = np.random.default_rng(9)
    two_refs = make_sample(99, rng, task="reference_generation")
    extra = two_refs.units[1].model_copy()
    two_refs = two_refs.model_copy(update={"units": [*two_refs.units, extra]})
    uri = str(tmp_path / "set")
    write_shard_set([*samples, two_refs], uri, ShardConfig(maxcount=4))
    rep = export_ace_plus(uri, tmp_path / "ace")
    lines = (tmp_path / "ace" / "train.csv").read_text().splitlines()
    assert len(lines) == 10 == rep.written  # no header row
    assert rep.skipped == {"more_than_one_reference": 1}
    by_key = {s.key: s for s in samples}
    for line in lines:
        edit, mask, ref, target, prompt, data_type = line.split(SEP)
        key = target.split("/")[1]
        s = by_key[key]
        assert prompt == s.instruction and data_type == s.task
        assert (tmp_path / "ace" / target).read_bytes() == s.target.image
        assert (tmp_path / "ace" / edit).read_bytes() == s.units[0].image
        assert bool(ref) == (s.task == "reference_generation")
        m = np.asarray(Image.open(tmp_path / "ace" / mask))
        assert m.shape == (40, 48)
        if s.units[0].mask is None:
            assert (m == 255).all()
        else:
            assert (m == np.asarray(Image.open(io.BytesIO(s.units[0].mask)))).all()


# The released trainer's list reader (ACEPlusDataset.read_data_list with the LoRA config's FIELDS), restated.
RELEASED_FIELDS = ["edit_image", "edit_mask", "ref_image", "target_image", "prompt", "data_type"]


def test_every_row_read_the_released_way_is_a_sample_with_existing_images(samples, tmp_path):
    uri = str(tmp_path / "set")
    write_shard_set(samples, uri, ShardConfig(maxcount=4))
    export_ace_plus(uri, tmp_path / "ace")
    rows = (tmp_path / "ace" / "train.csv").read_bytes().decode("utf-8").strip().split("\n")
    items = [dict(zip(RELEASED_FIELDS, row.split("#;#"))) for row in rows]
    assert len(items) == len(samples)
    assert {i["data_type"] for i in items} <= {s.task for s in samples}
    for item in items:
        assert len(item) == 6 and item["target_image"] and item["edit_image"] and item["edit_mask"]
        for field in ("edit_image", "edit_mask", "ref_image", "target_image"):
            if item[field]:  # the released loader opens every non-empty path under the prefix
                im = Image.open(tmp_path / "ace" / item[field])
                im.verify()
