"""Records that flow between stages. Pyarrow schemas for them live in schemas/arrow.py."""

from __future__ import annotations

import re
from enum import Enum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.taxonomy import Refs, task_spec

SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageRecord(_Record):
    id: str = Field(description="sha256 hex of the file's bytes")
    uri: str = Field(description="where the bytes were read; tar members as 'tar_uri#member'")
    width: int = Field(gt=0, description="after EXIF orientation")
    height: int = Field(gt=0, description="after EXIF orientation")
    format: str = Field(description="PIL format name: JPEG, PNG, WEBP, ...")
    mode: str = Field(description="PIL mode of the file before normalisation to RGB")
    source: str = Field(description="the ingest source this record came from")
    nbytes: int = Field(ge=0)


class QuarantineReason(str, Enum):
    EMPTY = "empty"  # zero-byte file
    READ_ERROR = "read_error"  # the bytes could not be read (missing, permission, I/O)
    TOO_MANY_BYTES = "too_many_bytes"  # file larger than the byte cap
    NOT_AN_IMAGE = "not_an_image"  # no image decoder recognised the bytes
    CORRUPT = "corrupt"  # header recognised, pixel data broken
    TRUNCATED = "truncated"  # pixel data ends early
    TOO_LARGE = "too_large"  # pixel count above the cap (decompression bomb guard)
    TOO_SMALL = "too_small"  # shorter side below the minimum
    UNSUPPORTED_MODE = "unsupported_mode"  # a pixel mode we cannot turn into RGB faithfully
    BAD_ARCHIVE = "bad_archive"  # a tar that cannot be read to its end; members before the fault are kept
    NOT_A_FILE = "not_a_file"  # a FIFO, socket or device in the source: never opened (it could block forever)
    UNDECODABLE_NAME = "undecodable_name"  # a file or tar member name that is not valid UTF-8: never read
    SYMLINK_OUTSIDE_SOURCE = "symlink_outside_source"  # a link out of a folder / glob source: never read


class QuarantineRecord(_Record):
    uri: str
    reason: QuarantineReason
    detail: str
    source: str


class Generator(_Record):
    name: str
    version: str


class Lineage(_Record):
    source_ids: list[str] = Field(default_factory=list, description="ImageRecord ids the sample is made from")
    generators: list[Generator] = Field(default_factory=list, description="every model or algorithm that made it")
    scores: dict[str, float] = Field(default_factory=dict, description="every filter score, by filter name")
    labels: dict[str, str] = Field(default_factory=dict, description="names a model gave the content "
                                   "(e.g. object_name), each scored in `scores`")


class PairRecord(_Record):
    pair_id: str
    source_id: str
    target_id: str
    task: str
    similarity: float
    scores: dict[str, float] = Field(default_factory=dict)
    instruction: str | None = None
    lineage: Lineage = Field(default_factory=Lineage)

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        task_spec(v)
        return v


class Role(str, Enum):
    EDIT = "edit"
    REFERENCE = "reference"
    TARGET = "target"


IMAGE_EXTS = ("png", "jpg", "webp")


class ConditionUnit(_Record):
    """One LCU: an encoded image, an optional single-channel mask (255 = generate), and its role."""

    role: Role
    image: bytes
    image_ext: str = "png"
    mask: bytes | None = Field(default=None, description="PNG, mode L, same size as the image")

    @field_validator("image_ext")
    @classmethod
    def _ext(cls, v: str) -> str:
        if v not in IMAGE_EXTS:
            raise ValueError(f"image_ext must be one of {IMAGE_EXTS}, got {v!r}")
        return v


_INDICATOR = re.compile(r"\{(image\d*)\}")


def instruction_indicators(instruction: str) -> list[str]:
    """The `{image}` / `{image1}`... indicators in an instruction, in order of appearance."""
    return _INDICATOR.findall(instruction)


class AceSample(_Record):
    key: str = Field(description="unique within a shard set; sanitised on write")
    task: str
    instruction: str
    units: list[ConditionUnit] = Field(default_factory=list, description="inputs, in indicator order")
    target: ConditionUnit
    caption: str | None = Field(default=None, description="caption of the target, when one was written")
    lineage: Lineage = Field(default_factory=Lineage)
    quality: dict[str, float | None] = Field(default_factory=dict, description="quality scores measured where the "
                                             "sample was packed (mining/quality.py); None: not measurable or its "
                                             "model absent")

    @model_validator(mode="after")
    def _consistent(self) -> AceSample:
        spec = task_spec(self.task)
        if self.target.role is not Role.TARGET:
            raise ValueError("target unit must have role 'target'")
        roles = [u.role for u in self.units]
        if Role.TARGET in roles:
            raise ValueError("input units may not have role 'target'")
        if roles.count(Role.EDIT) > 1:
            raise ValueError("at most one edit unit")
        if spec.refs is Refs.ZERO and Role.REFERENCE in roles:
            raise ValueError(f"task {self.task} is 0-ref but the sample has reference units")
        if not spec.min_inputs <= len(self.units) <= spec.max_inputs:
            raise ValueError(f"task {self.task} takes {spec.min_inputs}-{spec.max_inputs} inputs, "
                             f"got {len(self.units)}")
        for ind in instruction_indicators(self.instruction):
            idx = 1 if ind == "image" else int(ind[5:])
            if not 1 <= idx <= len(self.units):
                raise ValueError(f"instruction names {{{ind}}} but the sample has {len(self.units)} inputs")
        return self


class ShardManifestRow(_Record):
    shard: str = Field(description="file name of the tar, relative to the shard set")
    samples: int
    bytes: int
    sha256: str
    counts_by_task: dict[str, int]


class EmbeddingPartition(BaseModel):
    """Vectors of one partition; stored as parquet with the embedder in the schema metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    ids: list[str]
    vectors: np.ndarray
    embedder: str
    embedder_version: str

    @model_validator(mode="after")
    def _shape(self) -> EmbeddingPartition:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.ids):
            raise ValueError(f"vectors must be (len(ids), dim), got {self.vectors.shape} for {len(self.ids)} ids")
        if self.vectors.dtype != np.float16:
            raise ValueError(f"vectors must be float16, got {self.vectors.dtype}")
        return self
