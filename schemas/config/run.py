"""The whole run's config: one section per component."""

from __future__ import annotations

import os

from pydantic import Field, field_validator

from schemas.config.base import _Config
from schemas.config.corpus import DemoConfig, IngestConfig, ShardConfig
from schemas.config.mining import MiningConfig
from schemas.config.orchestration import OrchestrationConfig
from schemas.config.supervision import SupervisionConfig
from schemas.config.synthesis import SynthesisConfig
from schemas.config.train import TrainConfig
from schemas.layout import DemoFiles


def default_models_dir() -> str:
    """The models directory when the config leaves `models_dir` out: env ACEFORGE_MODELS; else `./models` where
    that folder exists (a checkout installed before the per-user default keeps working); else the per-user cache
    (platformdirs: `<user cache dir>/aceforge/models`, e.g. ~/.cache/aceforge/models on Linux), where `make
    install` and `aceforge models pull` put the files, found from any working directory."""
    from pathlib import Path

    if env := os.environ.get("ACEFORGE_MODELS"):
        return env
    if Path("models").is_dir():
        return "models"
    from platformdirs import user_cache_dir

    return str(Path(user_cache_dir("aceforge", appauthor=False)) / "models")


class RunConfig(_Config):
    root: str = Field(DemoFiles("demo_out").root, description="fsspec URI where every stage writes")
    models_dir: str = Field(
        default_factory=default_models_dir,
        description="folder holding model weights; unset: env ACEFORGE_MODELS, else ./models where that folder "
                    "exists, else the per-user cache <user cache dir>/aceforge/models (e.g. ~/.cache/aceforge/models)",
    )
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    shards: ShardConfig = Field(default_factory=ShardConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)

    @field_validator("root")
    @classmethod
    def _root_filesystem(cls, v: str) -> str:
        if "://" in v:
            import fsspec

            protocol = v.split("://", 1)[0]
            try:
                fsspec.get_filesystem_class(protocol)
            except (ImportError, ValueError) as e:
                raise ValueError(f"no filesystem for {protocol}:// here ({e})") from None
        return v
