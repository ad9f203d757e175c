from __future__ import annotations

import io
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from schemas.records import AceSample, ConditionUnit, Generator, Lineage, Role  # noqa: E402


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def random_image(rng: np.random.Generator, w: int = 48, h: int = 40) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def make_sample(i: int, rng: np.random.Generator, task: str = "general_editing", key: str | None = None,
                with_mask: bool = False) -> AceSample:
    mask = png(Image.fromarray(np.where(rng.random((40, 48)) > 0.5, 255, 0).astype(np.uint8))) if with_mask else None
    units = [ConditionUnit(role=Role.EDIT, image=png(random_image(rng)), mask=mask)]
    instruction = f"Edit number {i} of {{image}}."
    if task == "reference_generation":
        units.append(ConditionUnit(role=Role.REFERENCE, image=png(random_image(rng)), image_ext="png"))
        instruction = f"Put the subject of {{image2}} into {{image1}} ({i})."
    return AceSample(
        key=key or f"sample-{i:04d}", task=task, instruction=instruction, units=units,
        target=ConditionUnit(role=Role.TARGET, image=png(random_image(rng))),
        caption=f"caption {i}",
        lineage=Lineage(source_ids=[f"src{i}", f"tgt{i}"], generators=[Generator(name="test", version="0")],
                        scores={"band": 0.9 + i * 1e-3}),
    )


@pytest.fixture
def samples() -> list[AceSample]:
    rng = np.random.default_rng(0)
    tasks = ["general_editing", "reference_generation", "inpainting"]
    return [make_sample(i, rng, task=tasks[i % 3], with_mask=(i % 3 == 2)) for i in range(10)]


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    from stages.corpus.demo_corpus import build_demo_corpus

    path = tmp_path_factory.mktemp("corpus") / "corpus"
    gt = build_demo_corpus(path)
    return path, gt


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server for the session (it takes ~20 s to start here)."""
    from flows import settings

    settings.apply()
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def prefect_results(tmp_path, monkeypatch, prefect_harness):
    """Per-test result storage, so cached results never leak between tests."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(tmp_path / "prefect-results")}):
        yield tmp_path / "prefect-results"


# the mining settings the `embedded` root was made with: the later stages find its embeddings by them
EMBEDDED_MINING = {"embedder": "offline", "partition_size": 40}


@pytest.fixture(scope="session")
def embedded(demo_corpus, tmp_path_factory):
    """The demo corpus ingested and embedded with the offline embedder, partitions of 40."""
    from schemas.config import RunConfig
    from stages.corpus.embed import EmbedStage
    from runtime.executors import LocalExecutor
    from stages.corpus.ingest import ingest

    corpus, _ = demo_corpus
    root = str(tmp_path_factory.mktemp("mine") / "root")
    ingest(str(corpus), root)
    rep = LocalExecutor().run(EmbedStage(RunConfig(root=root, mining=EMBEDDED_MINING)))
    return root, rep.outputs[0]


def copy_embedded(embedded: tuple[str, str], root: str) -> str:
    """`root`: a new run root holding the `embedded` catalog and embeddings, for the stages after them."""
    import shutil

    shutil.copytree(embedded[0], root)
    return root


@pytest.fixture(scope="session")
def mp_models(tmp_path_factory):
    """A models directory with MediaPipe's files: ACEFORGE_MODELS, else the repository's ./models where it
    exists, else the per-user default (where `make install` fetched them); else fetched now."""
    import os
    from pathlib import Path

    from mining.models.mediapipe import ChecksumError, MissingModelError, check_files, fetch

    from schemas.config.run import default_models_dir

    repo = Path(__file__).resolve().parents[1] / "models"
    here = Path(os.environ.get("ACEFORGE_MODELS") or (repo if repo.is_dir() else default_models_dir()))
    try:
        check_files(here)
        return here
    except (MissingModelError, ChecksumError):
        pass
    models = tmp_path_factory.mktemp("models")
    try:
        fetch(models, os.environ.get("ACEFORGE_MEDIAPIPE_WHEEL"))
    except Exception as e:  # noqa: BLE001 - any failure to get them fails the tests, naming the fix
        pytest.fail(f"MediaPipe models absent and not fetchable ({e}); run `python -m mining.models.mediapipe fetch`")
    return models
