"""Records of the multi-input synthesis stages (style pairs, long-context and multi-turn chains) and the
AceSamples they give. A record holds its inputs in indicator order with their roles, the edit input's mask
(or none), the target, an instruction per task, and lineage (sources, generators, scores, labels).

    <root>/synth/<kind>/part-NNNNN-<digest>/chains.parquet   (style, long_context, multi_turn)
"""

from __future__ import annotations

import json
from typing import Iterator

import pyarrow as pa

from schemas.layout import SynthFiles
from schemas.records import AceSample, ConditionUnit, Generator, Lineage, Role
from stages.synthesis.parts import RECORD_GROUP_ROWS
from store import storage

CHAINS = SynthFiles.CHAINS
CHAIN_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("kind", pa.string()),
    ("source_ids", pa.string()),  # json [catalog id, ...]: every image the record was made from
    ("inputs", pa.list_(pa.binary())),  # PNGs in indicator order
    ("roles", pa.list_(pa.string())),  # "edit" / "reference" per input
    ("edit_mask", pa.binary()),  # PNG mask of the edit input (255 = generate), or null
    ("target_png", pa.binary()),
    ("instructions", pa.string()),  # json {task: instruction}
    ("generators", pa.string()),  # json [[name, version], ...]
    ("scores", pa.string()),  # json {name: value}
    ("labels", pa.string()),  # json {what: name} or null
])


def write_chain_records(part: str, rows: list[dict], counts: dict) -> None:
    storage.atomic_write_parquet(storage.join(part, CHAINS), pa.Table.from_pylist(rows, schema=CHAIN_SCHEMA),
                                 row_group_rows=RECORD_GROUP_ROWS)
    storage.write_marker(part, {"counts": counts})


def iter_chain_records(stage_dir: str) -> Iterator[dict]:
    """The records of a finished stage, one part in memory at a time (a single-item stage: its own file)."""
    marker = storage.read_marker(stage_dir)
    if marker is None:
        raise FileNotFoundError(f"no complete synthesis under {stage_dir}")
    for name in marker.get("parts") or ["."]:
        uri = storage.join(stage_dir, CHAINS) if name == "." else storage.join(stage_dir, name, CHAINS)
        for batch in storage.parquet_file(uri).iter_batches(batch_size=64):
            yield from batch.to_pylist()


def iter_chain_part(part: str) -> Iterator[dict]:
    """The records of one finished part (a batch of rows in memory at a time)."""
    for batch in storage.parquet_file(storage.join(part, CHAINS)).iter_batches(batch_size=64):
        yield from batch.to_pylist()


def chain_samples(rec: dict, tasks: list[str]) -> Iterator[AceSample]:
    """The AceSamples of one record for `tasks`. style_editing keeps only the edit input (0-ref); every
    other task takes the inputs as they are."""
    instructions = json.loads(rec["instructions"])
    lineage = Lineage(source_ids=json.loads(rec["source_ids"]),
                      generators=[Generator(name=n, version=v) for n, v in json.loads(rec["generators"])],
                      scores=json.loads(rec["scores"]), labels=json.loads(rec.get("labels") or "{}"))
    units = [ConditionUnit(role=Role(r), image=im, mask=rec["edit_mask"] if r == "edit" else None)
             for im, r in zip(rec["inputs"], rec["roles"])]
    for task in tasks:
        if task not in instructions:
            continue
        mine = [u for u in units if u.role is Role.EDIT] if task == "style_editing" else units
        yield AceSample(key=f"{task}-{rec['sample_id']}", task=task, instruction=instructions[task], units=mine,
                        target=ConditionUnit(role=Role.TARGET, image=rec["target_png"]), lineage=lineage)


def chain_line(cls, c: dict, group: dict, name: str) -> str:
    """A style or chain stage in the command line's summary (its `summary`)."""
    return f"synthesis: {cls.key.replace('_', '-')} {c.get('samples', c.get('pairs'))} samples (counts {c})"
