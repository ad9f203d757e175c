"""The demo flow on the embedded default: build the demo corpus, then the mining flow over it (ingest,
embed, cluster, band union-find, known-transformation instructions, shards; synthesis: object removal and
addition, repainting, outpainting on a third of the images), then the training flow: a few
Ray Train steps of the toy FLUX.1-Fill model with checkpoints and both LoRA exports.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.artifacts import counts_table
from flows.pipelines import DEMO_LANDED_RESOURCE, mine_flow, run_config, train_flow
from schemas.config.synthesis import CAPTION_TASKS
from schemas.config import (FACE_TASKS, SYNTH_TASKS, DemoConfig, MiningConfig, ShardConfig, SynthesisConfig,
                            TrainConfig)
from schemas.layout import DemoFiles, PairFiles, RunLayout
from store import storage
from stages.corpus.demo_corpus import build_demo_corpus, current_corpus, family_member_ids
from stages.corpus.ingest import load_catalog

DEMO_SHARD_PREFIX = "demo"
# a few steps of the toy model: enough to show checkpoints, metrics and both exports
DEMO_TRAIN = TrainConfig(base="tiny", max_steps=4, checkpoint_every=2, max_tokens=256, lora_rank=8,
                         max_sequence_length=64, num_workers=1, eval_fraction=0.2, eval_samples=2,
                         eval_images=2, eval_draws=2, eval_infer_steps=4, ui_every=1)
DEMO_SHARDS = ShardConfig(maxcount=32)
# the demo corpus is about 120 images: one cluster (n/50 would cut it in two and split families); series
# generation packs the groups of the same sets (3-8 references + a target)
DEMO_MINING = MiningConfig(k=1, presets=["general_editing", "series_generation"])
# every synthesis task on a third of the catalog (a few dozen images, chosen by id), with the offline
# segmenter and inpainter unless SAM / big-lama are in the models directory
# OCR costs ~0.5 s per image and up to three runs per image here: the text stage reads the first dozen
# catalog rows (the captioned photos sort first), every one of them
DEMO_SYNTHESIS = SynthesisConfig(tasks=list(SYNTH_TASKS) + list(FACE_TASKS), fraction=0.35, partition_size=60,
                                 text={"fraction": 1.0, "max_images": 12})
# the demo corpus with its style family (style pairs need one)
DEMO_CORPUS = DemoConfig(style_family=True)


@dataclass
class FamilyRecovery:
    families: int
    recovered: int  # families that came back as exactly one set
    impure_sets: int  # sets that mix two families


def _family_ids(corpus: Path, root: str) -> dict[str, str]:
    """catalog id -> family name, for every family member that was accepted."""
    return {rid: fam for fam, members in family_member_ids(corpus, load_catalog(root)).items()
            for _, rid in members if rid}


def _group_ids(corpus: Path, root: str) -> dict[str, str]:
    """catalog id -> 'face:<person>' for the face photos (edited copies of one photo of a person: a set of
    them is pure, though they are not families with known instructions)."""
    from stages.corpus.demo_corpus import load_ground_truth

    corpus = Path(corpus).resolve()
    person = {str(corpus / f): m["person"] for f, m in load_ground_truth(corpus).get("faces", {}).items()}
    return {r.id: f"face:{person[p]}" for r in load_catalog(root) if (p := str(Path(r.uri).resolve())) in person}


def family_recovery(corpus: Path, root: str, preset: str) -> FamilyRecovery:
    fam_of = _family_ids(corpus, root)
    sets = storage.read_parquet(PairFiles(RunLayout(root).pairs(preset)).table("sets")).to_pylist()
    members: dict[tuple[int, int], set[str]] = defaultdict(set)
    for row in sets:
        members[(row["cluster"], row["set_id"])].add(row["id"])
    fam_members: dict[str, set[str]] = defaultdict(set)
    for rid, fam in fam_of.items():
        fam_members[fam].add(rid)
    found = {frozenset(m) for m in members.values()}
    recovered = sum(frozenset(m) in found for m in fam_members.values())
    label = {**_group_ids(corpus, root), **fam_of}
    impure = sum(len({label.get(i, i) for i in m}) > 1 for m in members.values())
    return FamilyRecovery(len(fam_members), recovered, impure)


def demo_config(out: Path, config: dict[str, Any] | None) -> dict[str, Any]:
    base = {"root": DemoFiles(str(out)).root, "shards": DEMO_SHARDS.model_dump(), "train": DEMO_TRAIN.model_dump(),
            "mining": DEMO_MINING.model_dump(mode="json"),
            "synthesis": DEMO_SYNTHESIS.model_dump(), "demo": DEMO_CORPUS.model_dump()}
    params = {**base, **(config or {})}
    # a captioning model configured (an endpoint, or a local VLM): the demo captions images for text_to_image too
    if ((params.get("mining") or {}).get("instructions") or {}).get("backend") in ("chat", "local_vlm"):
        synthesis = dict(params.get("synthesis") or {})
        synthesis["tasks"] = list(dict.fromkeys([*(synthesis.get("tasks") or []), *CAPTION_TASKS]))
        params["synthesis"] = synthesis
    return params


OWNER = ".aceforge-demo"  # written first in every folder the demo makes; it only ever replaces those


def claim(folder: str, legacy: str | None = None) -> None:
    """Make `folder` the demo's: new or empty, or already carrying the demo's mark (or, from before the mark
    existed, holding `legacy`, a file only the demo writes); else refuse."""
    fs, path = storage.fs_path(folder)
    ours = fs.exists(storage.join(path, OWNER)) or (legacy is not None and fs.exists(storage.join(path, legacy)))
    if fs.exists(path) and fs.ls(path) and not ours:
        raise FileExistsError(f"{folder} is not empty and was not made by aceforge demo: choose another --out or "
                              "root (nothing there was touched)")
    fs.makedirs(path, exist_ok=True)
    if not fs.exists(storage.join(path, OWNER)):
        with fs.open(storage.join(path, OWNER), "w") as f:
            f.write("made by aceforge demo; a demo with another corpus may delete and rebuild this folder\n")


@task(name="demo-corpus")
def prepare_corpus(out: str, demo: dict, root: str) -> str:
    """The corpus, kept when it is already complete with this config; when it is (re)built, the demo root
    derived from an earlier corpus is replaced (it is the demo's own: `claim` checked)."""
    corpus = Path(DemoFiles(out).corpus)
    if current_corpus(corpus, DemoConfig(**demo)) is None:
        fs, path = storage.fs_path(root)
        if fs.exists(RunLayout(path).catalog):
            claim(root)  # refuses a root the demo did not make: only the demo's own root is removed
            fs.rm(path, recursive=True)
            claim(root)
    build_demo_corpus(corpus, DemoConfig(**demo))
    return str(corpus)


@flow(name="aceforge-demo", log_prints=True)
def demo_flow(out: str = "demo_out", config: dict[str, Any] | None = None, train: bool = True) -> dict:
    """The whole pipeline on the demo corpus. A second run with the same config executes no completed item
    and rewrites no file; a folder the demo did not make is refused, never deleted."""
    out_path = Path(out).resolve()
    params = demo_config(out_path, config)
    cfg = run_config(params, None)
    claim(str(out_path), legacy=f"{DemoFiles.CORPUS}/{DemoFiles.GROUND_TRUTH}")
    inside = Path(cfg.root).resolve().parent == out_path if "://" not in cfg.root else False
    claim(cfg.root, legacy=RunLayout.CATALOG if inside else None)
    corpus = prepare_corpus(str(out_path), cfg.demo.model_dump(), cfg.root)
    mined = mine_flow(source=corpus, root=cfg.root, config=params, writer={"kind": "demo", "corpus": corpus},
                      shard_prefix=DEMO_SHARD_PREFIX, landed_resource=DEMO_LANDED_RESOURCE)
    preset = cfg.mining.presets[0]
    rec = family_recovery(Path(corpus), cfg.root, preset)
    counts_table("demo families", {"families": rec.families, "recovered as sets": rec.recovered,
                                   "sets mixing families": rec.impure_sets}, "demo-families")
    result = {"corpus": corpus, "mined": mined, "recovery": rec.__dict__}
    if train:
        sets = [mined[p]["shards"]["uri"] for p in cfg.mining.presets if "shards" in mined[p]]
        if "shards" in mined.get("synthesis", {}):  # the mined and the synthesized shard sets train as one mixture
            sets.append(mined["synthesis"]["shards"]["uri"])
        if "chain_shards" in mined.get("synthesis", {}):  # style pairs and chains: their own shard set, the same mixture
            sets.append(mined["synthesis"]["chain_shards"]["uri"])
        result["training"] = train_flow(shard_uris=sets, root=cfg.root, config=params)
    return result
