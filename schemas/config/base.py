"""The base of every config model, the error a bad config raises, and the hash of a config."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    pass


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def config_hash(cfg: BaseModel) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]
