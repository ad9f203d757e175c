"""People's verdicts on mined pairs: what is labelled, the verdicts kept at <root>/labels/<task>.parquet, the
order pairs are shown in, and Label Studio's JSON (export for teams that label there, import of their work).

A verdict is accept (a valid pair of the task: label 1), reject (label 0) or skip (seen, no verdict). Every
verdict is appended: the file is read, extended and written whole through a temporary name, so a crash
never loses earlier labels; the latest verdict on a pair is the one that counts.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.layout import PairFiles, RunLayout, ShardFiles
from schemas.taxonomy import task_spec
from store import storage

VERDICTS = ("accept", "reject", "skip")
LABEL_SCHEMA = pa.schema([("label_id", pa.string()), ("pair_id", pa.string()), ("source_id", pa.string()),
                          ("target_id", pa.string()), ("task", pa.string()), ("verdict", pa.string()),
                          ("who", pa.string()), ("at", pa.string()), ("origin", pa.string())])
# the labelling interface of a Label Studio project that imports our export
LABEL_STUDIO_CONFIG = """<View>
  <Text name="instruction" value="$instruction"/>
  <Image name="source" value="$source"/>
  <Image name="target" value="$target"/>
  <Choices name="verdict" toName="target" choice="single" showInline="true">
    <Choice value="accept"/><Choice value="reject"/><Choice value="skip"/>
  </Choices>
</View>"""


@dataclass
class LabelItem:
    """One pair as the page shows it."""
    pair_id: str
    source_id: str
    target_id: str
    task: str
    instruction: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    source: str | None = None  # an image URI (mined pairs) ...
    target: str | None = None
    images: dict[str, bytes] = field(default_factory=dict)  # ... or the bytes (a shard set's samples)

    def public(self) -> dict:
        return {"pair_id": self.pair_id, "source_id": self.source_id, "target_id": self.target_id,
                "task": self.task, "instruction": self.instruction, "scores": self.scores}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_labels(root: str, task: str) -> pa.Table:
    uri = RunLayout(root).pair_labels(task)
    return storage.read_parquet(uri).cast(LABEL_SCHEMA) if storage.exists(uri) else LABEL_SCHEMA.empty_table()


def append_labels(root: str, task: str, rows: list[dict]) -> int:
    """Append verdicts (dicts of LABEL_SCHEMA's fields; label_id and at filled in when absent); the number of
    labels the file now holds. Rewritten whole through a temporary name: earlier labels survive any crash."""
    task_spec(task)
    for r in rows:
        if r.get("verdict") not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {r.get('verdict')!r}")
        if r.get("task", task) != task:
            raise ValueError(f"a {r['task']} label cannot go with the {task} labels")
    new = pa.Table.from_pylist([{"label_id": r.get("label_id") or uuid.uuid4().hex, "task": task,
                                 "at": r.get("at") or _now(), "origin": r.get("origin") or "page",
                                 **{k: str(r[k]) for k in ("pair_id", "source_id", "target_id", "verdict", "who")}}
                                for r in rows], schema=LABEL_SCHEMA)
    table = pa.concat_tables([read_labels(root, task), new])
    storage.atomic_write_parquet(RunLayout(root).pair_labels(task), table)
    return table.num_rows


def latest_verdicts(table: pa.Table) -> dict[str, dict]:
    """pair_id -> its latest label row (by time, then by order in the file)."""
    out: dict[str, dict] = {}
    for r in sorted(enumerate(table.to_pylist()), key=lambda kr: (kr[1]["at"], kr[0])):
        out[r[1]["pair_id"]] = r[1]
    return out


def training_rows(table: pa.Table) -> tuple[list[str], list[str], np.ndarray]:
    """(source ids, target ids, 0/1 labels) of the pairs whose latest verdict is accept or reject."""
    rows = [r for r in latest_verdicts(table).values() if r["verdict"] != "skip"]
    return ([r["source_id"] for r in rows], [r["target_id"] for r in rows],
            np.array([r["verdict"] == "accept" for r in rows], np.int64))


# --- what is labelled ------------------------------------------------------------------------------------

def load_items(where: str, root: str | None = None) -> tuple[str, list[LabelItem]]:
    """(root, items) of a preset's mined pairs (a preset name with `root`, or its pairs/<preset> folder)
    or of a shard set's two-image samples (its folder)."""
    if root is not None and not storage.exists(where) and storage.exists(RunLayout(root).pairs(where)):
        where = RunLayout(root).pairs(where)
    if storage.exists(ShardFiles(where).manifest):
        return root or str(Path(where).parents[1]), _shard_items(where)
    if storage.read_marker(where) is not None and storage.exists(PairFiles(where).pairs):
        root = root or str(Path(where).parents[1])
        return root, _pair_items(where, root)
    raise FileNotFoundError(f"{where} is neither a complete pairs/<preset> folder nor a shard set "
                            f"(give a preset name with --root, or either folder)")


def _pair_items(pairs_dir: str, root: str) -> list[LabelItem]:
    from stages.corpus.ingest import catalog_uris
    from stages.pairs.instruct import iter_instructed
    from stages.pairs.mine import load_pairs

    pairs = load_pairs(pairs_dir)
    said: dict[str, str | None] = {}
    instructed = PairFiles(pairs_dir).instructed
    if storage.read_marker(instructed) is not None:
        said = {p.pair_id: p.instruction for p in iter_instructed(instructed)}
    uris = catalog_uris(root, {i for p in pairs for i in (p.source_id, p.target_id)}) if pairs else {}
    return [LabelItem(p.pair_id, p.source_id, p.target_id, p.task, said.get(p.pair_id), dict(p.scores),
                      uris[p.source_id], uris[p.target_id]) for p in pairs]


def _shard_items(set_uri: str) -> list[LabelItem]:
    from store.shard_reader import read_shard_set

    out = []
    for s in read_shard_set(set_uri):
        if len(s.units) != 1 or len(s.lineage.source_ids) < 2:
            continue  # a pair is one input and one target
        out.append(LabelItem(s.key, s.lineage.source_ids[0], s.lineage.source_ids[1], s.task, s.instruction,
                             dict(s.lineage.scores), images={"source": s.units[0].image, "target": s.target.image}))
    return out


def order_items(items: list[LabelItem], scores: np.ndarray | None) -> list[LabelItem]:
    """Least certain first (score nearest 0.5) when a classifier scored them; else as mined."""
    if scores is None:
        return list(items)
    order = np.argsort(np.abs(np.asarray(scores, np.float64) - 0.5), kind="stable")
    for k in order:
        items[k].scores["classifier"] = float(scores[k])
    return [items[k] for k in order]


# --- Label Studio ------------------------------------------------------------------------------------------

def export_label_studio(items: list[LabelItem], labels: pa.Table, path: Path) -> int:
    """Label Studio tasks (one per pair; its latest verdict as an annotation); the number written."""
    latest = latest_verdicts(labels)
    tasks = []
    for n, it in enumerate(items, 1):
        task = {"id": n, "data": {**it.public(), "scores": json.dumps(it.scores), "source": it.source,
                                  "target": it.target}}
        if (v := latest.get(it.pair_id)) is not None:
            task["annotations"] = [{"completed_by": v["who"], "created_at": v["at"], "result": [
                {"from_name": "verdict", "to_name": "target", "type": "choices", "value": {"choices": [v["verdict"]]}}]}]
        tasks.append(task)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(tasks, indent=1))
    tmp.replace(path)
    return len(tasks)


def import_label_studio(path: Path, task: str) -> list[dict]:
    """Label rows from a Label Studio export (JSON): each task's latest annotation with a verdict choice."""
    try:
        tasks = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a Label Studio JSON export: {e}") from None
    if not isinstance(tasks, list):
        raise ValueError(f"{path} is not a Label Studio JSON export (a list of tasks)")
    rows = []
    for t in tasks:
        data = t.get("data") or {}
        missing = [k for k in ("pair_id", "source_id", "target_id") if not data.get(k)]
        if missing:
            raise ValueError(f"{path}: task {t.get('id')} has no {', '.join(missing)} in its data")
        if data.get("task", task) != task:
            continue  # another task's pair
        for a in sorted(t.get("annotations") or [], key=lambda a: str(a.get("created_at", "")))[::-1]:
            choices = [c for r in a.get("result") or [] if r.get("type") == "choices"
                       for c in (r.get("value") or {}).get("choices") or []]
            if choices and choices[0] in VERDICTS and not a.get("was_cancelled"):
                who = a.get("completed_by")
                who = who.get("email", who.get("id")) if isinstance(who, dict) else who
                rows.append({"pair_id": data["pair_id"], "source_id": data["source_id"],
                             "target_id": data["target_id"], "verdict": choices[0], "who": f"label-studio:{who}",
                             "at": a.get("created_at") or _now(), "origin": "label-studio"})
                break
    return rows
