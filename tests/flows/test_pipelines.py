import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.pipelines import mine_flow
from store import storage
from stages.corpus.ingest import ingest
from store.shards import read_manifest

REPO = Path(__file__).resolve().parents[2]
MINING = {"mining": {"k": 3, "clusters_per_batch": 1}, "shards": {"maxcount": 8}}


@pytest.fixture
def ingested(demo_corpus, tmp_path):
    corpus, _ = demo_corpus
    root = str(tmp_path / "root")
    ingest(str(corpus), root)
    return corpus, root


def test_a_failed_item_is_the_only_one_a_rerun_executes(ingested, tmp_path, monkeypatch, prefect_results):
    import runtime.executors as executors

    from flows.pipelines import run_config
    from stages.corpus.cluster import cluster_stages
    from stages.corpus.embed import EmbedStage
    from runtime.executors import LocalExecutor
    from stages.pairs.mine import MineStage

    _, root = ingested
    cfg = run_config(MINING, root)
    for stage in (EmbedStage(cfg), *cluster_stages(cfg)):
        LocalExecutor().run(stage)
    names = [b.rsplit("/", 1)[-1] for b in MineStage(cfg, preset="general_editing")._batches()]
    batches = Path(root, "pairs", "general_editing", "batches")
    batches.mkdir(parents=True)
    (batches / names[1]).write_text("a file where batch 1's folder goes: its item fails on Ray")
    monkeypatch.setattr(executors, "item_task", executors.item_task.with_options(retry_delay_seconds=0))
    with pytest.raises(Exception, match=names[1]):
        mine_flow(root=root, config=MINING)
    done = {p: p.stat().st_mtime_ns for p in Path(root).rglob(storage.MARKER)}
    assert {p.parent.name for p in done} >= {"catalog", "offline-dct-hist", names[0], names[2]}
    assert not (batches / names[1]).is_dir()
    (batches / names[1]).unlink()
    result = mine_flow(root=root, config=MINING)
    assert {p: p.stat().st_mtime_ns for p in done} == done  # finished items were not executed again
    assert (batches / names[1] / storage.MARKER).exists()
    assert result["general_editing"]["mined"]["clusters"] == 3
    now = {p: p.stat().st_mtime_ns for p in Path(root).rglob(storage.MARKER)}
    mine_flow(root=root, config=MINING)
    assert {p: p.stat().st_mtime_ns for p in Path(root).rglob(storage.MARKER)} == now  # complete: nothing runs


_RUN = """
import sys
sys.path.insert(0, {repo!r})
from flows.pipelines import mine_flow
mine_flow(source={source!r}, root={root!r}, config={config!r}, writer={{"kind": "demo", "corpus": {source!r}}})
"""


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_shards(demo_corpus, tmp_path, prefect_results):
    from prefect.settings import PREFECT_API_URL

    corpus, _ = demo_corpus
    killed_root, clean_root = str(tmp_path / "killed"), str(tmp_path / "clean")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    code = _RUN.format(repo=str(REPO), source=str(corpus), root=killed_root, config=MINING)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    batches = Path(killed_root, "pairs", "general_editing", "batches")
    end = time.time() + 240
    while time.time() < end and not list(batches.glob(f"batch-00000-*/{storage.MARKER}")) and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-mining: embeddings done, shards not yet written
    proc.wait()
    assert list(batches.glob(f"batch-00000-*/{storage.MARKER}")), "the run ended before it reached mining"
    assert storage.read_marker(storage.join(killed_root, "shards", "mined-general_editing")) is None
    resumed = mine_flow(source=str(corpus), root=killed_root, config=MINING,
                        writer={"kind": "demo", "corpus": str(corpus)})
    clean = mine_flow(source=str(corpus), root=clean_root, config=MINING,
                      writer={"kind": "demo", "corpus": str(corpus)})
    a = read_manifest(resumed["general_editing"]["shards"]["uri"])
    b = read_manifest(clean["general_editing"]["shards"]["uri"])
    assert [(r.shard, r.samples, r.sha256) for r in a] == [(r.shard, r.samples, r.sha256) for r in b]
    assert sum(r.samples for r in a) > 0


def test_flow_parameters_are_validated_by_the_config_models(tmp_path, prefect_results):
    from schemas.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown key 'mining.kk'.*clusters_per_batch"):
        mine_flow(root=str(tmp_path / "root"), config={"mining": {"kk": 1}})


@pytest.mark.slow
def test_every_image_of_a_multi_partition_corpus_is_embedded(tmp_path, prefect_results):
    """6,000 images, 6 ingest and 6 embedding partitions run 4 at a time over 2 actors: none is lost."""
    import numpy as np
    from PIL import Image

    from flows.pipelines import run_config
    from stages.corpus.embed import EmbedStage, load_embeddings
    from runtime.executors import PrefectRayExecutor
    from stages.corpus.ingest import IngestStage
    from stages.corpus.ingest import catalog_slice, load_catalog

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6000):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(corpus / f"{i:05d}.png",
                                                                                 compress_level=1)
    cfg = run_config({"ingest": {"partition_files": 1000}, "mining": {"partition_size": 1000, "batch_size": 50},
                      "orchestration": {"items_in_flight": 4, "embed_actors": 2}}, str(tmp_path / "root"))
    ex = PrefectRayExecutor(cfg.orchestration.items_in_flight, cfg.orchestration.embed_actors)
    try:
        assert ex.run(IngestStage(cfg, source=str(corpus))).counts["accepted"] == 6000
        emb_uri = ex.run(EmbedStage(cfg)).outputs[0]
    finally:
        ex.close()
    ids, x, marker = load_embeddings(emb_uri)
    catalog = [r.id for r in load_catalog(cfg.root)]
    assert (marker["partitions"], marker["images"], marker["embedded"]) == (6, 6000, 6000)
    assert ids == catalog and x.shape[0] == 6000  # every image, in catalog order
    assert [r.id for r in catalog_slice(cfg.root, 2500, 3500)] == catalog[2500:3500]


def test_one_mining_run_of_two_presets_lands_one_event_with_every_set(ingested, monkeypatch, prefect_results):
    import flows.pipelines as pipelines

    _, root = ingested
    sent = []
    real = pipelines.emit_event

    def recorded(**kwargs):  # the real emit, and a note of what it sent
        sent.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(pipelines, "emit_event", recorded)
    config = {**MINING, "mining": {**MINING["mining"], "presets": ["general_editing", "reference_generation"]},
              "synthesis": {"tasks": ["inpainting"], "max_images": 4}}  # a synthesized set joins the mined ones
    res = mine_flow(root=root, config=config)
    (event,) = sent
    sets = [res[p]["shards"]["uri"] for p in ("general_editing", "reference_generation")] + \
        [res["synthesis"]["shards"]["uri"]]
    assert res["synthesis"]["shards"]["landed_now"] and sets[-1].endswith("mined-synthesis")
    assert all(res[p]["shards"]["landed_now"] for p in ("general_editing", "reference_generation"))
    assert event["event"] == "aceforge.shards.landed" and event["resource"]["prefect.resource.id"] == "aceforge.shards.mined"
    payload = event["payload"]
    assert payload["shard_uris"] == [storage.absolute(u) for u in sets] and payload["root"] == storage.absolute(root)
    assert payload["manifests"] == [storage.join(storage.absolute(u), "manifest.parquet") for u in sets]
    assert payload["samples"] == sum(r.samples for u in sets for r in read_manifest(u)) > 0
    sent.clear()
    mine_flow(root=root, config=config)  # nothing lands again: no event
    assert sent == []
    # a run that packed the sets and then failed before announcing them (no record of the event): its
    # retry, which packs nothing, still announces every set
    (record,) = [p for p in os.listdir(os.path.join(root, "shards")) if p.startswith("_announced-")]
    os.remove(os.path.join(root, "shards", record))
    mine_flow(root=root, config=config)
    (again,) = sent
    assert again["payload"]["shard_uris"] == payload["shard_uris"]
