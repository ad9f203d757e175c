import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from schemas.config import MAP_TASKS, RunConfig
from schemas.records import Generator
from runtime.executors import LocalExecutor
from stages.corpus.ingest import ingest
from store.shard_reader import read_shard_set
from stages.synthesis import maps as synth_maps
from stages.synthesis.maps import MapsStage
from stages.synthesis.pack import SynthPackStage
from stages.synthesis.parts import iter_records

PHOTOS = ("astronaut", "chelsea", "coffee")
MAPS = ("segmentation", "depth", "pose", "mosaic", "degradation", "grayscale", "canny", "contour", "doodle",
        "scribble")


def _arr(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


class StandInPose:
    """Fixed keypoints for the plumbing only: a person on the astronaut photo (the widest image), nobody else."""

    name, version = "stand-in-pose", "0"

    def __call__(self, rgb):
        if rgb.shape[0] != rgb.shape[1]:
            return []
        h, w = rgb.shape[:2]
        kp = np.zeros((18, 3), np.float32)
        kp[:, 0] = np.linspace(0.3, 0.7, 18) * w
        kp[:, 1] = np.linspace(0.2, 0.9, 18) * h
        kp[:, 2] = 1.0
        return [kp]


def _draw(h, w, people):
    out = np.zeros((h, w, 3), np.uint8)
    for p in people:
        for x, y, c in p:
            if c > 0:
                out[int(y), int(x)] = 255
    return out


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for name in PHOTOS:
        im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        im.thumbnail((96, 96))
        im.save(src / f"{name}.png")
    monkeypatch.setattr(synth_maps, "pose_backend", lambda cfg: (StandInPose(), _draw, Generator(name="stand-in-pose", version="0")))
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": list(MAP_TASKS), "partition_size": 2, "max_side": 96,
                               "maps": {"regional_share": 0.5}})
    ingest(str(src), cfg.root, cfg.ingest)
    return cfg


def _run(cfg):
    ex = LocalExecutor()
    return ex.run(MapsStage(cfg)), ex.run(SynthPackStage(cfg, shard_name="maps"))


def test_maps_end_to_end_counts_reconcile_and_samples_read_back(corpus):
    maps, pack = _run(corpus)
    c = maps.counts
    assert c["images"] == c["read"] == 3
    for kind in MAPS + ("multi",):
        assert c["samples"].get(kind, 0) + sum(c["dropped"].get(kind, {}).values()) == 3, kind
    assert c["dropped"]["depth"] == {"depth_model_absent": 3}  # no model folder: every depth sample dropped
    assert c["dropped"]["pose"] == {"no_person": 2} and c["samples"]["pose"] == 1
    for kind in ("canny", "grayscale", "mosaic", "contour", "doodle", "scribble", "degradation"):
        assert c["samples"][kind] == 3, kind
    by_task = pack.counts["counts_by_task"]
    for kind, n in c["samples"].items():
        if kind == "multi":
            assert by_task["control_multi"] == n
        else:
            assert by_task[f"analysis_{kind}"] == by_task[f"control_{kind}"] == n
    assert "analysis_depth" not in by_task
    regional = 0
    for s in read_shard_set(pack.counts["uri"]):
        target = _arr(s.target.image)
        edit = _arr(s.units[0].image)
        assert edit.shape == target.shape, s.key
        if s.task == "control_multi":
            assert len(s.units) >= 2 and "{image2}" in s.instruction
            assert all((_arr(u.mask) == 255).all() for u in s.units)  # the whole target is generated
            assert not np.array_equal(edit, target) and not np.array_equal(edit, _arr(s.units[1].image))
            continue
        mask = _arr(s.units[0].mask) > 0
        if not mask.all():
            regional += 1
            assert np.array_equal(edit[~mask], target[~mask]), s.key  # outside the mask: the source, untouched
        assert "{image}" in s.instruction
        if s.task == "control_grayscale":
            assert "olo" in s.instruction  # colorize / colour
            assert (edit[..., 0] == edit[..., 1])[mask].all() and (edit[..., 1] == edit[..., 2])[mask].all()
        if s.task == "control_degradation":
            verb = [k for k in s.lineage.scores if k.startswith("verb_")]
            assert len(verb) == 1 and any(k.startswith("deg0_") for k in s.lineage.scores)
        names = [g.name for g in s.lineage.generators]
        if s.task.endswith("scribble"):
            assert "scribble-classical-softedge" in names
    assert regional > 0
    recs = [r for r in iter_records(maps.outputs[0]) if r["kind"].startswith("multi:")]
    for r in recs:  # the groups of a multi-condition record partition the image, each with its map
        groups = _arr(r["mask_png"])
        k = len(r["kind"].split(":")[1].split("+"))
        assert set(np.unique(groups).tolist()) == set(range(1, k + 1))


def test_maps_report_shows_every_kind_in_both_directions(corpus, monkeypatch):
    import flows.maps_report as mr

    seen = {}
    monkeypatch.setattr(mr, "create_markdown_artifact", lambda text, key, description: seen.update(text=text))
    maps, _ = _run(corpus)
    mr.maps_report(maps.outputs[0], "maps", "maps-test-report")
    rows = [line for line in seen["text"].splitlines() if "| **map:" in line or "| **multi:" in line]
    assert len(rows) == len(maps.counts["samples"])  # one row per kind that has samples
    assert all(row.count("data:image/") == 1 for row in rows)  # source, mask and map in one strip
    assert "analysis_canny:" in seen["text"] and "control_canny:" in seen["text"]
    assert "control_degradation:" in seen["text"] and "depth_model_absent" in seen["text"]


def test_rerun_is_deterministic(corpus, tmp_path):
    maps, _ = _run(corpus)
    first = {r["sample_id"]: (r["edit_png"], r["target_png"], r["mask_png"]) for r in iter_records(maps.outputs[0])}
    cfg2 = corpus.model_copy(update={"root": str(tmp_path / "root2")})
    ingest(str(tmp_path / "src"), cfg2.root, cfg2.ingest)
    maps2 = LocalExecutor().run(MapsStage(cfg2))
    second = {r["sample_id"]: (r["edit_png"], r["target_png"], r["mask_png"]) for r in iter_records(maps2.outputs[0])}
    assert first == second


def test_only_configured_tasks_are_packed(tmp_path, corpus):
    cfg = corpus.model_copy(update={"synthesis": corpus.synthesis.model_copy(
        update={"tasks": ["analysis_canny", "control_degradation"]})})
    maps, pack = _run(cfg)
    assert set(maps.counts["samples"]) == {"canny", "degradation"}
    assert pack.counts["counts_by_task"] == {"analysis_canny": 3, "control_degradation": 3}


def test_with_hed_weights_pinned_scribble_and_doodle_come_from_hed(corpus):
    import hashlib

    import torch

    from mining.maps.hed import HedNet, hed_path

    torch.manual_seed(0)
    path = hed_path(corpus.models_dir)
    path.parent.mkdir(parents=True)
    torch.save(HedNet().state_dict(), path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    tasks = ["analysis_scribble", "control_doodle", "analysis_canny"]
    cfg = corpus.model_copy(update={"synthesis": corpus.synthesis.model_copy(update={
        "tasks": tasks, "maps": corpus.synthesis.maps.model_copy(update={"hed_sha256": sha})})})
    maps, pack = _run(cfg)
    assert maps.counts["samples"]["scribble"] == maps.counts["samples"]["doodle"] == 3
    for s in read_shard_set(pack.counts["uri"]):
        gens = [g.name for g in s.lineage.generators]
        kind = s.task.split("_", 1)[1]
        if kind in ("scribble", "doodle"):
            assert gens[:2] == [f"{kind}-hed", "hed-controlnet-apache2"], gens
        else:
            assert "hed-controlnet-apache2" not in gens
    unpinned = cfg.model_copy(update={"synthesis": cfg.synthesis.model_copy(update={
        "maps": cfg.synthesis.maps.model_copy(update={"hed_sha256": None})})})
    stage = MapsStage(unpinned)
    with pytest.raises(Exception, match="pins no digest"):  # present but unpinned: refused, not a silent fallback
        stage.setup()  # what a worker calls before its first item


def test_regional_masks_are_placed_where_the_map_teaches_something(tmp_path):
    from mining.maps import cond_maps as cm
    from mining.supervision import colourfulness, map_content

    stage = MapsStage(RunConfig(root=str(tmp_path / "root")))
    photo = skimage.data.astronaut()[::2, ::2].copy()
    labels = np.zeros(photo.shape[:2], np.int32)
    labels[:, 128:] = 1
    labels[60:200, 20:100] = 2  # segments of 17-50 %: a one-segment mask would be one flat colour
    seg = cm.colour_labels(labels)
    pose = np.zeros_like(photo)
    pose[20:70, 200:204] = (0, 255, 0)  # a limb in one corner only
    grey_half = photo.copy()
    grey_half[:, :128] = photo[:, :128].mean(-1, keepdims=True).astype(np.uint8)
    for seed in range(8):
        rng = np.random.default_rng(seed)
        m = stage._region("segmentation", photo, seg, labels, rng)
        assert m is not None and map_content(seg, m) > 0.01 and len(np.unique(labels[m])) > 1
        m = stage._region("pose", photo, pose, labels, rng)
        assert m is not None and map_content(pose, m) >= 0.002
        m = stage._region("grayscale", grey_half, cm.grayscale(grey_half), labels, rng)
        assert m is None or colourfulness(grey_half, m) >= 4.0
    blank = np.zeros_like(photo)
    assert stage._region("pose", photo, blank, labels, np.random.default_rng(0)) is None  # no content anywhere
