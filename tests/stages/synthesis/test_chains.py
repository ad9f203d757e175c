"""Style pairs, long-context chains over one image and multi-turn chains over one mined set: stages, counts,
the chain property (each turn's output is the next turn's input) and packing."""

import io
import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from mining.style.features import style_reference_ok
from mining.supervision import view
from schemas.arrow import PAIR_SCHEMA, to_table
from schemas.config import RunConfig
from schemas.records import PairRecord, Role, instruction_indicators
from store import storage
from stages.synthesis.chain_pack import ChainPackStage, chain_stages
from stages.synthesis.chain_records import iter_chain_records
from stages.corpus.demo_corpus import style_family
from runtime.executors import LocalExecutor
from stages.corpus.ingest import ingest, load_catalog
from stages.synthesis.segment import SegmentStage
from store.shard_reader import read_shard_set
from stages.synthesis.style import StyleStage
from stages.synthesis.style_features import StyleBucketsStage, StyleFeaturesStage
from stages.synthesis.chains import LongContextStage, MultiTurnStage, conversations
from stages.synthesis.objects import ObjectsStage
from stages.synthesis.parts import iter_records

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
TASKS = ["style_editing", "style_transfer_reference", "long_context", "multi_turn"]


def _arr(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def write_instructed(cfg: RunConfig, pairs: list[tuple[str, str, str]], name: str = "batch-00000-0123abcd",
                     after: tuple[str, ...] = ()) -> None:
    """An instructed batch as the instruct stage leaves it (names -> catalog ids by file name), and the
    preset's marker listing the batches `after` then it."""
    ids = {r.uri.rsplit("/", 1)[-1].split(".")[0]: r.id for r in load_catalog(cfg.root)}
    recs = [PairRecord(pair_id=f"{name}-p{k}", source_id=ids[a], target_id=ids[b], task="general_editing",
                       similarity=0.9, instruction=text) for k, (a, b, text) in enumerate(pairs)]
    out = storage.join(cfg.root, "pairs", "general_editing", "instructed")
    batch = storage.join(out, name)
    storage.atomic_write_parquet(storage.join(batch, "pairs.parquet"), to_table(recs, PairRecord).cast(PAIR_SCHEMA))
    counts = {"pairs": len(recs), "with_instruction": len(recs)}
    storage.write_marker(batch, {"counts": counts})
    storage.write_marker(out, {"counts": counts, "batches": [*after, name]})


PAIRS = [("astronaut", "chelsea", "Make {image} a cat photo."), ("chelsea", "coffee", "Turn {image} into coffee."),
         ("coffee", "rocket", "Launch a rocket from {image}."), ("astronaut", "rocket", "Swap {image} for a rocket.")]


def build_chains(tmp_path, **synthesis):
    """A small corpus (four photos + a poster-style family), its object removals, style pairs, chains and
    their shard set; returns (cfg, reports by label)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in PHOTOS:
        im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        im.thumbnail((112, 112))
        im.save(src / f"{name}.png")
    style_family(src, 112)
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": TASKS, "partition_size": 4, "max_side": 112, "objects_per_image": 3,
                               # cv2's fills of these thumbnails are smears; chains need removals that pass
                               "verify": {"max_smear_ratio": 1e6}, **synthesis},
                    supervision={"smear_max_ratio": 1e6})
    ingest(str(src), cfg.root, cfg.ingest)
    write_instructed(cfg, PAIRS)
    ex = LocalExecutor()
    reps = {}
    for st in [SegmentStage(cfg), ObjectsStage(cfg), *chain_stages(cfg), ChainPackStage(cfg, shard_name="chains")]:
        reps[st.label] = ex.run(st)
    return cfg, reps


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    return build_chains(tmp_path_factory.mktemp("chains"))


def test_long_context_turns_chain_and_keep_everything_outside_each_mask(chains):
    cfg, reps = chains
    c = reps["synth-long-context"].counts
    assert c["sources"] == sum(c["chains"].values()) and c["turns"] == c["samples"] + sum(c["dropped"].values())
    assert c["samples"] > 0
    removal = {}  # source id -> the first removal (turn 1: x0 -> x1)
    for rec in iter_records(ObjectsStage(cfg).out):
        removal.setdefault(rec["source_id"], rec)
    samples = [s for s in read_shard_set(reps["pack-chains"].counts["uri"]) if s.task == "long_context"]
    gate = reps["pack-chains"].counts.get("supervision_dropped", {}).get("long_context", {})
    assert len(samples) == c["samples"] - sum(gate.values())  # the packer's supervision checks drop with a reason
    by_source: dict[str, dict[int, object]] = {}
    for s in samples:
        by_source.setdefault(s.lineage.source_ids[0], {})[len(s.units)] = s
    deep = 0
    for source, turns in by_source.items():
        first = removal[source]
        for n, s in turns.items():  # n inputs: the sample of turn n
            assert [u.role for u in s.units] == [Role.REFERENCE] * (n - 1) + [Role.EDIT]
            assert np.array_equal(_arr(s.units[0].image), _arr(first["edit_png"]))  # x0: the source
            assert np.array_equal(_arr(s.units[1].image), _arr(first["target_png"]))  # x1: turn 1's output
            edit, target, mask = _arr(s.units[-1].image), _arr(s.target.image), _arr(s.units[-1].mask) > 0
            assert np.array_equal(edit[~mask], target[~mask]) and not np.array_equal(edit[mask], target[mask])
            assert instruction_indicators(s.instruction)[-1] == f"image{n}"  # the current turn edits the newest
            if n - 1 in turns:  # the previous turn's output is this turn's input
                assert np.array_equal(edit, _arr(turns[n - 1].target.image))
                deep += 1
    assert deep > 0  # some chain reached a third turn


def test_multi_turn_walks_a_set_into_one_conversation_with_the_history_as_references(chains):
    cfg, reps = chains
    c = reps["synth-multi-turn"].counts
    assert c["pairs"] == len(PAIRS) == sum(c["pair_fate"].values())
    assert c["samples"] == c["conversations"]["packed"] >= 1
    ids = {r.uri.rsplit("/", 1)[-1].split(".")[0]: r.id for r in load_catalog(cfg.root)}
    samples = [s for s in read_shard_set(reps["pack-chains"].counts["uri"]) if s.task == "multi_turn"]
    assert len(samples) == c["samples"]
    assert sum(len(s.units) for s in samples) == c["pair_fate"]["in_conversation"]  # n turns: n inputs
    names = {v: k for k, v in ids.items()}
    files = {r.id: r.uri for r in load_catalog(cfg.root)}
    edges = {(a, b) for a, b, _ in PAIRS}
    for s in samples:
        order = [names[i] for i in s.lineage.source_ids]  # every image in order of appearance, the target last
        assert len(order) == len(s.units) + 1 >= 3
        for u, name in zip(s.units, order):  # the inputs are the catalog images themselves
            assert np.array_equal(_arr(u.image), np.asarray(Image.open(files[ids[name]]).convert("RGB")))
        assert np.array_equal(_arr(s.target.image), np.asarray(Image.open(files[ids[order[-1]]]).convert("RGB")))
        [edit] = [k for k, u in enumerate(s.units) if u.role is Role.EDIT]
        assert (order[edit], order[-1]) in edges  # the last turn edits its own source into the target
        assert all(("{image%d}" % (k + 1)) in s.instruction for k in range(len(s.units)))
        assert all(any(b == order[k] for _, b, _ in PAIRS) for k in range(1, len(order)))  # each came from a turn


def test_conversations_prefer_the_newest_image_and_use_every_pair_once():
    pairs = [("p0", "a", "b", "x"), ("p1", "b", "c", "y"), ("p2", "a", "d", "z"), ("p3", "e", "f", "w")]
    convs = conversations(pairs, 4, np.random.default_rng(0))
    assert sorted(p[0] for c in convs for p in c) == ["p0", "p1", "p2", "p3"]
    for conv in convs:
        shown = [conv[0][1], conv[0][2]]
        for p in conv[1:]:
            assert p[1] in shown and p[2] not in shown
            shown.append(p[2])
    assert max(len(c) for c in convs) >= 2


def test_style_pairs_come_from_the_planted_style_set_and_counts_reconcile(chains):
    cfg, reps = chains
    c, f = reps["synth-style"].counts, reps["synth-style-features"].counts
    assert f["images"] == f["read"] + sum(f["skipped"].values()) == len(load_catalog(cfg.root))
    assert f["read"] == c["members"] == c["pool"] and c["pool"] == c["pool_in_sets"] + c["contents"]
    assert c["contents"] == c["pairs"] + sum(c["dropped"].values()) and c["pairs"] > 0
    family = {r.id for r in load_catalog(cfg.root) if "/styles/" in r.uri}
    for rec in iter_chain_records(reps["synth-style"].outputs[0]):
        content, ref = json.loads(rec["source_ids"])
        assert ref in family and content not in family  # the reference is a member of the style family
        assert json.loads(rec["labels"])["style"] == "poster"  # the bank style that made the family matches
        scores = json.loads(rec["scores"])
        assert scores["style_match"] >= cfg.synthesis.style.min_match
        assert scores["reference_target_style_cos"] >= cfg.supervision.style_min_cosine
        assert scores["style_set_least_to_centre"] >= cfg.synthesis.style.threshold
        sup = cfg.supervision  # the reference is itself a poster, nearer the target's style than the content
        assert scores["reference_target_style_cos"] - scores["content_target_style_cos"] >= sup.style_min_margin
        assert scores["reference_fixed_change"] <= sup.style_fixed_max_change
        assert scores["reference_fixed_cos"] >= sup.style_fixed_min_cosine
    assert c["style_sets_used"] >= 1 and c["style_set"] == len(family)  # the family, whole and alone
    assert c["style_sets_tried"] == c["style_sets_used"] + sum(c["set_dropped"].values())
    by_task = reps["pack-chains"].counts["counts_by_task"]
    assert by_task["style_editing"] == by_task["style_transfer_reference"] == c["pairs"]
    for s in read_shard_set(reps["pack-chains"].counts["uri"]):  # every packed reference passes the check
        if s.task == "style_transfer_reference":
            why, scores = style_reference_ok(view(s), cfg.supervision)
            assert why is None, scores


def test_a_tight_set_of_photos_is_in_no_bank_style_and_gives_no_pairs(tmp_path):
    """Edited copies of two photos form tight style sets (as in the demo corpus); the bank's nearest rendering
    of them is near in features, but no member is a fixed point of any bank style, so no set is used."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("chelsea", "astronaut"):
        im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        im.thumbnail((112, 112))
        for k, v in enumerate([im, im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), im.point(lambda p: min(255, p + 12)),
                               im.crop((4, 4, im.width - 4, im.height - 4)), im.rotate(3)]):
            v.save(src / f"{name}-{k}.png")
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": ["style_editing", "style_transfer_reference"], "max_side": 112})
    ingest(str(src), cfg.root, cfg.ingest)
    ex = LocalExecutor()
    c = [ex.run(st) for st in (StyleFeaturesStage(cfg), StyleBucketsStage(cfg), StyleStage(cfg))][-1].counts
    assert c["style_sets"] >= 1 and c["style_sets_used"] == 0 and c["pairs"] == 0
    assert c["set_dropped"] == {"not_in_bank_style": c["style_sets_tried"]}
    assert c["dropped"] == {"no_renderable_style_set": c["contents"]} and c["contents"] == c["members"] == 10


def test_counts_that_do_not_reconcile_stop_the_stage_before_its_marker(chains, tmp_path):
    cfg, _ = chains
    stage = LongContextStage(cfg)
    part = stage.parts()[0]
    marker = storage.read_marker(part)
    final = storage.read_marker(stage.out)
    storage.write_marker(part, {**marker, "counts": {**marker["counts"], "samples": marker["counts"]["samples"] + 1}})
    fs, path = storage.fs_path(stage.final_outputs()[0])
    fs.rm(path)
    with pytest.raises(RuntimeError, match="turns after the first do not reconcile"):
        stage.finalize(stage.plan())
    assert storage.read_marker(stage.out) is None
    storage.write_marker(part, marker)  # put the module's run back for the tests after this one
    storage.write_marker(stage.out, final)


def test_multi_turn_without_the_instructed_pairs_is_a_clear_error(tmp_path):
    cfg = RunConfig(root=str(tmp_path / "root"), synthesis={"tasks": ["multi_turn"]})
    with pytest.raises(FileNotFoundError, match="add the preset to mining.presets"):
        MultiTurnStage(cfg).run(0)


def test_a_rerun_rewrites_nothing(chains):
    from pathlib import Path

    cfg, reps = chains
    files = lambda: {p: p.stat().st_mtime_ns for p in Path(cfg.root).rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    ex = LocalExecutor()
    again = {st.label: ex.run(st) for st in [*chain_stages(cfg), ChainPackStage(cfg, shard_name="chains")]}
    assert {k: r.counts for k, r in again.items()} == {k: reps[k].counts for k in again}
    assert files() == before


def test_a_new_instructed_batch_is_a_new_multi_turn_part_and_new_shards_only(tmp_path):
    from pathlib import Path

    cfg, reps = build_chains(tmp_path, tasks=["long_context", "multi_turn"])
    out = Path(reps["pack-chains"].counts["uri"])
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    parts = MultiTurnStage(cfg).parts()
    write_instructed(cfg, [(a, b, f"Again: {text}") for a, b, text in PAIRS],  # another set, the same shape
                     name="batch-00001-4567cdef", after=("batch-00000-0123abcd",))
    ex = LocalExecutor()
    turns = ex.run(MultiTurnStage(cfg))
    assert turns.execution.ran == 1 and MultiTurnStage(cfg).parts()[0] == parts[0] and turns.items == 2
    assert turns.counts["pairs"] == 2 * len(PAIRS)
    assert turns.counts["samples"] == 2 * reps["synth-multi-turn"].counts["samples"]
    grown = ex.run(ChainPackStage(cfg, shard_name="chains"))
    after = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert {k: after[k] for k in before} == before and len(after) > len(before)
    assert all(k.startswith("shard-multi_turn-part-00001-") for k in set(after) - set(before))
    assert grown.execution.ran == 1 and grown.counts["kept_shards"] == len(before)
    assert grown.counts["samples"] == reps["pack-chains"].counts["samples"] + turns.counts["samples"] - \
        reps["synth-multi-turn"].counts["samples"]
