import math

import pytest


from schemas.config import RunConfig, TrainConfig
from stages.corpus.demo_corpus import face_photos
from runtime.executors import LocalExecutor
from stages.corpus.ingest import ingest
from store.shard_reader import read_shard_set
from stages.synthesis.face_buckets import FaceBucketsStage
from stages.synthesis.faces import FacePairsStage, FacesStage
from stages.synthesis.pack import SynthPackStage
from trainer.data import Example
from trainer.panels import sample_panels
from trainer.train import AceTrainer


@pytest.mark.slow
def test_one_step_on_each_facial_task(tiny_base, tmp_path):
    face_photos(tmp_path / "src")
    cfg = RunConfig(root=str(tmp_path / "root"), models_dir=str(tmp_path / "models"),
                    synthesis={"tasks": ["facial_editing", "facial_editing_misaligned"], "max_side": 160})
    ingest(str(tmp_path / "src"), cfg.root, cfg.ingest)
    ex = LocalExecutor()
    for s in (FacesStage(cfg), FaceBucketsStage(cfg), FacePairsStage(cfg)):
        ex.run(s)
    uri = ex.run(SynthPackStage(cfg, shard_name="faces")).counts["uri"]
    first = {}
    for s in read_shard_set(uri):
        first.setdefault(s.task, s)
    assert set(first) == {"facial_editing", "facial_editing_misaligned", "reference_generation"}
    folder, _ = tiny_base
    tr = AceTrainer(TrainConfig(mode="lora", lora_rank=4, lr=1e-3, max_steps=10, gradient_checkpointing=False,
                                max_sequence_length=32, max_tokens=24, use_gpu="no", vae_sample=False), folder)
    tr.setup()
    for task, s in first.items():
        m = tr.train_step([Example(s.key, s.task, s.instruction, sample_panels(s, 24, "canvas"))])
        assert math.isfinite(m["loss"]) and m["loss"] > 0, task
