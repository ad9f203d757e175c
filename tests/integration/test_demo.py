import io
import json

import numpy as np
import torch
from PIL import Image

from flows.demo import DEMO_TRAIN, demo_flow
from schemas.config import RunConfig as _RunConfig
from store import storage
from stages.pairs.instruct import load_instructed
from store.shard_reader import read_shard_set
from trainer.components import load_pipeline


DemoRunConfig = _RunConfig()  # the demo runs the default supervision thresholds


def dropped(shard_counts: dict) -> dict[str, int]:
    """Samples the supervision gate dropped per task, from a shard set's report."""
    return {t: sum(r.values()) for t, r in (shard_counts.get("supervision_dropped") or {}).items()}


def test_demo_flow_mines_packs_and_trains(tmp_path, prefect_results):
    res = demo_flow(out=str(tmp_path), config={"shards": {"maxcount": 16}})
    # mining: families come back as sets, only pairs with a known transformation are packed
    rec = res["recovery"]
    assert rec["families"] == 13 and rec["impure_sets"] == 0
    assert rec["recovered"] >= 10  # the offline embedder's figure; SigLIP is the real thing
    stage = res["mined"]["general_editing"]
    counts = stage["instructions"]
    assert counts["with_instruction"] + counts.get("without_instruction", 0) == stage["mined"]["pairs"]
    shards = stage["shards"]
    assert shards["landed_now"] and shards["shards"] == -(-shards["samples"] // 16)
    samples = list(read_shard_set(shards["uri"]))
    assert len(samples) + dropped(shards).get("general_editing", 0) == counts["with_instruction"]
    assert len(samples) == shards["samples"] > 0
    for s in samples:
        gens = [g.name for g in s.lineage.generators]
        assert gens[0] == "offline-dct-hist" and gens[-1] == "known-transform" and "{image}" in s.instruction
    pairs_dir = storage.join(str(tmp_path / "root"), "pairs", "general_editing", "instructed")
    unpacked = [p for p in load_instructed(pairs_dir) if not p.instruction]
    assert len(unpacked) == counts.get("without_instruction", 0)
    # synthesis: object removal and its reverse, repainting, outpainting; the outside of every mask untouched
    syn = res["mined"]["synthesis"]
    by_task = syn["shards"]["counts_by_task"]

    def promised(task):  # what the synthesis stages made for the task: packed + dropped by the supervision gate
        return by_task.get(task, 0) + dropped(syn["shards"]).get(task, 0)

    assert promised("object_removal") == promised("object_addition") == syn["objects"]["samples"] > 0
    assert promised("layer_decouple") == promised("layer_fusion") == syn["objects"]["samples"]
    assert promised("inpainting") == promised("outpainting") == syn["repaint"]["read"] == syn["segment"]["images"] > 20
    for task in ("object_removal", "object_addition", "layer_decouple", "layer_fusion", "inpainting", "outpainting"):
        assert by_task.get(task, 0) >= promised(task) // 2 > 0, (task, dropped(syn["shards"]))  # most pass the gate
    from mining.text.ocr import make_ocr
    from schemas.config import FACE_TASKS, MAP_TASKS

    from flows.demo import DEMO_SYNTHESIS

    t = DEMO_SYNTHESIS.text
    ocr = make_ocr(t.ocr, "models", t.min_score, t.min_chars)  # as the demo ran it
    text_removals = 0
    for s in read_shard_set(syn["shards"]["uri"]):
        edit, target = (np.asarray(Image.open(io.BytesIO(u.image)).convert("RGB")) for u in (s.units[0], s.target))
        if s.units[0].mask is None:  # a whole-image change: a global map, restoration, or a pair of two photos
            assert s.task in MAP_TASKS or s.task in FACE_TASKS, s.key
            assert s.task in FACE_TASKS or edit.shape == target.shape, s.key  # a map has its source's size
            continue
        keep = np.asarray(Image.open(io.BytesIO(s.units[0].mask))) == 0
        assert np.array_equal(edit[keep], target[keep]) and not keep.all(), s.key
        if s.task == "text_removal":  # every text-removed image of the demo: OCR reads nothing where the text was,
            for hit in ocr(target):  # and nothing it is sure of elsewhere (texture read at a low score may stay)
                cx, cy = np.asarray(hit.box).mean(0).astype(int)
                assert keep[cy, cx] and hit.score < DemoRunConfig.supervision.text_min_score, (s.key, hit)
            text_removals += 1
    assert text_removals == by_task["text_removal"] > 0
    # every kind of the synthesis group landed: maps both ways, restoration, faces, style and chains
    for task in ("analysis_canny", "control_canny", "control_degradation", "control_multi", "analysis_pose",
                 "facial_editing", "facial_editing_misaligned", "reference_generation", "text_addition"):
        assert by_task.get(task, 0) > 0, task
    chains = syn["chain_shards"]["counts_by_task"]
    assert all(chains.get(t, 0) > 0 for t in ("style_editing", "style_transfer_reference", "long_context",
                                              "multi_turn")), chains
    # the registry declares what the demo packed: each task of a synthesized set has one registered producer
    # of that set, which declares it and packs it under the demo's config
    from flows.demo import demo_config
    from stages import registry

    cfg = _RunConfig.model_validate(demo_config(tmp_path, {"shards": {"maxcount": 16}}))
    for packs, packed in (("synthesis", by_task), ("chains", chains)):
        makers = {t: c for c in registry.producers(packs) for t in c.produces}
        assert set(packed) <= set(makers), (packs, set(packed) - set(makers))
        for c in registry.producers(packs):
            mine = {t for t in packed if makers[t] is c}
            assert mine <= set(c.produces) & set(c(cfg).packed_tasks()), (c.name, mine)
    # every packed sample of every set teaches a change (no input is its target) and passes the audit
    from stages.supervise import audit

    sets = [shards["uri"], res["mined"]["series_generation"]["shards"]["uri"], syn["shards"]["uri"],
            syn["chain_shards"]["uri"]]
    for uri in sets:
        n = 0
        for s in read_shard_set(uri):
            target = np.asarray(Image.open(io.BytesIO(s.target.image)).convert("RGB"))
            for u in s.units:
                x = np.asarray(Image.open(io.BytesIO(u.image)).convert("RGB"))
                assert x.shape != target.shape or not np.array_equal(x, target), s.key
            n += 1
        failures: list = []
        tally = audit(read_shard_set(uri), DemoRunConfig.supervision, failures)
        assert sum(tally.checked.values()) == n > 0 and failures == [], (uri, failures[:5])
    # training: a few Ray Train steps, checkpoints, and a LoRA that loads into FluxFillPipeline
    t = res["training"]
    assert t["step"] == DEMO_TRAIN.max_steps and [m["step"] for m in t["metrics"]] == [1, 2, 3, 4]
    pipe = load_pipeline(tmp_path / "root" / "models" / "tiny-random-flux-fill")
    img = Image.open(tmp_path / "corpus" / "photos/coffee/base.png").convert("RGB").resize((64, 64))
    kw = dict(prompt="Make {image} brighter.", image=img, mask_image=Image.new("L", (64, 64), 255), height=64,
              width=64, num_inference_steps=2, max_sequence_length=64)
    base = np.asarray(pipe(**kw, generator=torch.Generator().manual_seed(0)).images[0], np.int16)
    pipe.load_lora_weights(t["exports"]["diffusers_lora"])
    tuned = np.asarray(pipe(**kw, generator=torch.Generator().manual_seed(0)).images[0], np.int16)
    assert np.abs(tuned - base).max() > 0
    # seen in the UI: progress, recent metrics, held-out loss per checkpoint and the grid of the last one
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    def latest(key):
        arts = get_client(sync_client=True).read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.UPDATED_DESC, limit=1)
        assert arts, f"no artifact {key}"
        return arts[0].data

    run = t["run_dir"].rstrip("/").rsplit("/", 1)[-1]  # named by what it trained on: p1-<12 hex> (phase 1)
    assert run.startswith("p1-") and latest(f"train-{run}-progress") == 100.0
    assert [r["step"] for r in json.loads(latest(f"train-{run}-metrics"))][-1] == 4
    evals = [m for m in t["metrics"] if "eval_loss" in m]
    # one mixture of the mined and synthesized shard sets: phase 1 evaluates every 0-ref task of both
    from schemas.shard_layout import sample_group
    from schemas.taxonomy import zero_ref_tasks
    from trainer.data import held_out

    series = res["mined"]["series_generation"]["shards"]
    assert series["counts_by_task"]["series_generation"] + dropped(series).get("series_generation", 0) == \
        res["mined"]["series_generation"]["mined"]["groups"]
    assert series["samples"] > 0
    trained = [shards["uri"], series["uri"], syn["shards"]["uri"], syn["chain_shards"]["uri"]]  # the mixture
    want = {s.task for uri in trained for s in read_shard_set(uri)
            if s.task in zero_ref_tasks() and held_out(sample_group(s.key, s.lineage.source_ids), DEMO_TRAIN)}
    assert {"general_editing", "object_removal", "inpainting", "text_removal", "control_canny"} <= want
    assert [m["step"] for m in evals] == [2, 4] and set(evals[0]["eval_loss"]) == want
    assert [r["step"] for r in json.loads(latest(f"train-{run}-eval"))] == [2, 4]
    assert "step 4" in latest(f"train-{run}-grid") and "data:image/jpeg;base64," in latest(f"train-{run}-grid")
    grid = Image.open(tmp_path / "root" / "checkpoints" / run / "eval" / "step-0000004.png")
    assert grid.width % 4 == 0 and grid.height >= 16


def test_a_foreign_folder_is_refused(tmp_path, prefect_results):
    """(A second demo on its own folder rewriting nothing: tests/flows/test_cli.py, on the CLI's demo.)"""
    import pytest

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("a user's file")
    with pytest.raises(FileExistsError, match="was not made by aceforge demo"):
        demo_flow(out=str(tmp_path / "demo2"), config={"root": str(foreign)}, train=False)
    assert (foreign / "keep.txt").read_text() == "a user's file" and [p.name for p in foreign.iterdir()] == ["keep.txt"]
