"""The base of every config model, the error a bad config raises, and the hash of a config."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


class ConfigError(ValueError):
    pass


RENAMED_KEY = "renamed_key"  # the error type of a key given under its earlier name


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    renamed: ClassVar[dict[str, str]] = {}  # a key's earlier name -> its name now: the old one is refused, naming it

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in cls.renamed.items():
                if old in data:
                    raise PydanticCustomError(RENAMED_KEY, "'{old}' is now called '{new}'", {"old": old, "new": new})
        return data


def config_hash(cfg: BaseModel) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]
