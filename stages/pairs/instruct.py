"""Give mined pairs their instruction, then turn the instructed pairs into AceSamples.

<root>/pairs/<preset>/instructed/<batch>/pairs.parquet holds every pair of one mining batch with its
instruction (or none), oriented the way the instruction runs; instructed/'s marker lists the batches and
counts pairs with and without one. Pairs without an instruction stay there and are never packed.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Callable, Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from mining.image.decode import normalized_bytes
from mining.instructions.writers import (ChatInstructionWriter, InstructionError, InstructionWriter, Item,
                                         KnownTransformWriter, TemplateInstructionWriter, write_all)
from schemas.arrow import PAIR_SCHEMA, from_table, to_table
from schemas.config import IngestConfig, InstructionConfig
from schemas.layout import MARKER, PairFiles, RunLayout
from schemas.records import AceSample, ConditionUnit, Generator, Lineage, PairRecord, Role
from schemas.taxonomy import Family, task_spec
from store import storage
from store.sources import read_uri
from runtime.stage import ItemReport, Resources, Stage, StageReport


def _image(rec, cfg: IngestConfig) -> tuple[bytes, str]:
    """Normalised bytes of a catalog record (or of a URI)."""
    return normalized_bytes(read_uri(rec if isinstance(rec, str) else rec.uri), max_pixels=cfg.max_pixels,
                            min_side=1)


def iter_pair_batches(uri: str, batch_rows: int = 2048) -> Iterator[list[PairRecord]]:
    """A pairs.parquet in batches of records: memory is bounded by the batch, not by the pairs."""
    for batch in storage.parquet_file(uri).iter_batches(batch_size=batch_rows):
        yield from_table(pa.Table.from_batches([batch]), PairRecord)  # type: ignore[misc]


def _previous(out: str, writer: str, mined: set[str]) -> pa.Table | None:
    """The instructed pairs an earlier run of the same writer left in `out` (its marker removed because the
    mined pairs grew) that are still mined, in their order; None when there are none or another writer
    made them."""
    uri = PairFiles(out).pairs
    if not storage.exists(uri):
        return None
    table = storage.read_parquet(uri)
    if (table.schema.metadata or {}).get(b"writer", b"").decode() != writer:
        return None
    return table.filter(pc.is_in(table.column("pair_id"), value_set=pa.array(sorted(mined), pa.string())))


def instruct_pairs(pairs: Iterable[PairRecord] | Iterable[list[PairRecord]], writer: InstructionWriter,
                   catalog: Mapping, pairs_uri: str, ingest_cfg: IngestConfig | None = None,
                   progress: Callable[[int], None] | None = None, mined: set[str] | None = None,
                   writer_key: str | None = None, out: str | None = None) -> tuple[str, dict[str, int]]:
    """An instruction for each pair. `pairs` is a list of pairs, or batches of them (with `mined`, the ids
    of them all): only a batch is held at a time. `catalog` maps the pairs' image ids to catalog records
    (or URIs); the writer reads images only when it needs them. Pairs an earlier run of this writer
    (`writer_key`: its whole spec; default its name) instructed keep their instruction and their order; new pairs come after them (so a shard set re-packed
    after new images landed keeps its finished shards). `out`: where they go (default `pairs_uri`'s instructed/)."""
    ingest_cfg = ingest_cfg or IngestConfig()
    out = out or PairFiles(pairs_uri).instructed
    marker = storage.read_marker(out)
    if marker is not None:
        return out, marker["counts"]
    if mined is None:
        pairs = list(pairs)  # type: ignore[arg-type]
        mined = {p.pair_id for p in pairs}  # type: ignore[union-attr]
        batches: Iterable[list[PairRecord]] = [pairs]  # type: ignore[list-item]
    else:
        batches = pairs  # type: ignore[assignment]
    counts: Counter[str] = Counter()
    gen = _generator(writer.name)
    key = writer_key or writer.name
    meta = {b"writer": key.encode()}
    with storage.ParquetSink(PairFiles(out).pairs, PAIR_SCHEMA.with_metadata(meta)) as sink:
        prev = _previous(out, key, mined)
        reused: set[str] = set()
        if prev is not None and prev.num_rows:
            sink.write(prev.replace_schema_metadata(meta).cast(PAIR_SCHEMA.with_metadata(meta)))
            reused = set(prev.column("pair_id").to_pylist())
            with_ins = prev.num_rows - prev.column("instruction").null_count
            counts["with_instruction"] += with_ins
            counts["without_instruction"] += prev.num_rows - with_ins
            counts["reused"] = prev.num_rows
        del prev
        def load(p: PairRecord) -> Item:
            src, tgt = (_image(catalog[p.source_id], ingest_cfg), _image(catalog[p.target_id], ingest_cfg)) \
                if writer.needs_images else ((b"", "png"), (b"", "png"))
            return p, src[0], tgt[0], src[1], tgt[1]

        for batch in batches:
            done: list[PairRecord] = []
            todo = [p for p in batch if p.pair_id not in reused]
            # a chat writer keeps its requests in flight across the batch, a local model batches it
            for p, ins in zip(todo, write_all(writer, todo, load), strict=True):
                if isinstance(ins, InstructionError):  # the endpoint failed (or its breaker is open): the template
                    ins = FALLBACK.write(p)
                    counts["chat_fallback"] += 1
                if ins is None:
                    counts["without_instruction"] += 1
                    done.append(p)
                else:
                    counts["with_instruction"] += 1
                    a, b = (p.target_id, p.source_id) if ins.swapped else (p.source_id, p.target_id)
                    g = gen if ins.writer == writer.name else _generator(ins.writer)
                    lineage = p.lineage.model_copy(update={"source_ids": [a, b],
                                                           "generators": [*p.lineage.generators, g]})
                    done.append(p.model_copy(update={"source_id": a, "target_id": b, "instruction": ins.instruction,
                                                     "lineage": lineage}))
                if progress:
                    progress(1)
            if done:
                sink.write(to_table(done, PairRecord).replace_schema_metadata(meta))
    counts.update(getattr(writer, "counts", {}))  # a chat writer's requests, failures by reason, breaker
    storage.write_marker(out, {"counts": dict(counts), "writer": writer.name})
    return out, dict(counts)


FALLBACK = TemplateInstructionWriter()


def _generator(name: str) -> Generator:
    return Generator(name=name.rsplit(":", 1)[0], version=name.rsplit(":", 1)[-1])


def load_instructed(uri: str) -> list[PairRecord]:
    """Every pair of one instructed folder (a batch's, or what `instruct_pairs` wrote) or, when its marker
    lists batches, of them all: for tests and small sets (`iter_instructed` streams)."""
    marker = storage.read_marker(uri)
    if marker is None:
        raise FileNotFoundError(f"no complete instructed pairs under {uri}")
    if "batches" in marker:
        return list(iter_instructed(uri))
    return from_table(storage.read_parquet(PairFiles(uri).pairs), PairRecord)  # type: ignore


def instructed_batches(uri: str) -> list[str]:
    """The batch directories of a preset's complete instructed pairs (its marker lists them), in order."""
    marker = storage.read_marker(uri)
    if marker is None:
        raise FileNotFoundError(f"no complete instructed pairs under {uri}")
    return [storage.join(uri, name) for name in marker["batches"]]


def iter_instructed(uri: str) -> Iterator[PairRecord]:
    """A preset's instructed pairs, batch after batch (a record batch in memory at a time)."""
    for d in instructed_batches(uri):
        for batch in iter_pair_batches(PairFiles(d).pairs):
            yield from batch


def pair_samples(pairs: Iterable[PairRecord], catalog: Mapping,
                 ingest_cfg: IngestConfig | None = None) -> Iterator[AceSample]:
    """One AceSample per pair that has an instruction: edit = source, target = target (for a reference
    generation task the source is the `reference` unit and nothing is edited in place). `catalog` maps image
    ids to catalog records or URIs."""
    ingest_cfg = ingest_cfg or IngestConfig()
    for p in pairs:
        if not p.instruction:
            continue
        src, tgt = _image(catalog[p.source_id], ingest_cfg), _image(catalog[p.target_id], ingest_cfg)
        role = Role.REFERENCE if task_spec(p.task).family is Family.REFERENCE_GENERATION else Role.EDIT
        yield AceSample(key=f"{p.task}-{p.pair_id}", task=p.task, instruction=p.instruction,
                        units=[ConditionUnit(role=role, image=src[0], image_ext=src[1])],
                        target=ConditionUnit(role=Role.TARGET, image=tgt[0], image_ext=tgt[1]),
                        lineage=p.lineage)


def iter_groups(uri: str, batch_rows: int = 1024) -> Iterator[dict]:
    """The rows of a groups.parquet (cluster, set_id, input_ids, target_id), a batch in memory at a time."""
    for batch in storage.parquet_file(uri).iter_batches(batch_size=batch_rows):
        yield from batch.to_pylist()


def group_ids(uri: str) -> set[str]:
    """Every image id a groups.parquet names."""
    t = storage.parquet_file(uri).read(columns=["input_ids", "target_id"])
    return set(pc.list_flatten(t.column("input_ids")).to_pylist()) | set(t.column("target_id").to_pylist())


def group_samples(groups: Iterable[dict], catalog: Mapping, task: str, generators: list[Generator],
                  ingest_cfg: IngestConfig | None = None) -> Iterator[AceSample]:
    """One AceSample per group of one union-find set: its 3-8 inputs as `reference` units ({image1}...
    {imageN} in the instruction, in order), its target as the target; no edit image (ACE B.8)."""
    import hashlib

    from mining.instructions.writers import GROUP_TEMPLATER, group_instruction

    ingest_cfg = ingest_cfg or IngestConfig()
    gens = [*generators, Generator(name=GROUP_TEMPLATER[0], version=GROUP_TEMPLATER[1])]
    for g in groups:
        ids = [*g["input_ids"], g["target_id"]]
        key = hashlib.sha256("|".join(ids).encode()).hexdigest()[:20]
        images = [_image(catalog[i], ingest_cfg) for i in ids]
        yield AceSample(key=f"{task}-{key}", task=task, instruction=group_instruction(task, key, len(ids) - 1),
                        units=[ConditionUnit(role=Role.REFERENCE, image=b, image_ext=e) for b, e in images[:-1]],
                        target=ConditionUnit(role=Role.TARGET, image=images[-1][0], image_ext=images[-1][1]),
                        lineage=Lineage(source_ids=ids, generators=gens,
                                        scores={"cluster": float(g["cluster"]), "set_id": float(g["set_id"])}))


def pair_ids_and_images(uri: str, instructed_only: bool = False) -> tuple[set[str], set[str]]:
    """(pair ids, image ids) of a pairs.parquet (of the pairs with an instruction when `instructed_only`),
    reading four columns only."""
    cols = storage.parquet_file(uri).read(columns=["pair_id", "source_id", "target_id", "instruction"])
    if instructed_only:
        cols = cols.filter(pc.is_valid(cols.column("instruction")))
    return set(cols.column("pair_id").to_pylist()), \
        set(cols.column("source_id").to_pylist()) | set(cols.column("target_id").to_pylist())


def demo_known_writer(corpus_dir: str, root: str) -> KnownTransformWriter:
    """Instructions of the demo corpus' known transformations, keyed by catalog ids."""
    from stages.corpus.demo_corpus import family_member_ids
    from stages.corpus.ingest import load_catalog

    known = {}
    for members in family_member_ids(corpus_dir, load_catalog(root)).values():
        (_, base), *variants = members
        for m, var in variants:
            if base and var and m["instruction"]:
                known[(base, var)] = m["instruction"]
    return KnownTransformWriter(known)


def make_writer(spec: dict, root: str, models_dir: str = "models", model=None) -> InstructionWriter:
    """{'kind': 'template'}, {'kind': 'chat' or 'local_vlm', ...InstructionConfig fields} or
    {'kind': 'demo', 'corpus': <demo corpus folder>}. `model`: a local_vlm writer's model, already loaded."""
    if spec["kind"] == "demo":
        return demo_known_writer(spec["corpus"], root)
    if spec["kind"] == "template":
        return TemplateInstructionWriter()
    ic = InstructionConfig(**{k: v for k, v in spec.items() if k != "kind"})
    if spec["kind"] == "local_vlm":
        from mining.instructions.local_vlm import LocalVLMWriter

        return LocalVLMWriter.from_config(ic, models_dir, model)
    return ChatInstructionWriter.from_config(ic, RunLayout(root).instruction_cache)


# how fast a writer works, not what it writes: changing them re-instructs nothing (replies are cached by content)
THROUGHPUT_KEYS = ("in_flight", "requests_per_second", "backoff_s", "timeout_s", "local_batch_size", "local_device")


def writer_identity(spec: dict | None) -> dict | None:
    """The writer spec without its throughput keys: what decides the instructions a batch holds."""
    return None if spec is None else {k: v for k, v in spec.items() if k not in THROUGHPUT_KEYS}


class InstructStage(Stage):
    """<root>/pairs/<preset>/instructed/<batch>/: an instruction for every pair of one mined batch (one item
    per batch, named as the batch); the finalize sums the batches' counts into instructed/'s marker, which
    lists them."""

    name = "instructions"
    item_name = "batch"
    resources = Resources(cpus=0.5)
    always, scope, key, config_section, ui_report = True, "preset", "instructions", "mining.instructions", \
        "instructions"
    needs = ("mine",)

    @classmethod
    def summary(cls, counts: dict, group: dict, name: str) -> str:
        return f"  instructions: {counts}"

    @property
    def label(self) -> str:
        return f"instructions-{self.params['preset']}"

    @property
    def out(self) -> str:
        return self.layout.instructed(self.params["preset"])

    def inputs(self) -> list[str]:
        return [self.layout.pairs(self.params["preset"])]

    def settings(self) -> dict:
        return {"writer": writer_identity(self.params["writer"])}

    @property
    def writer_key(self) -> str:
        return json.dumps(writer_identity(self.params["writer"]), sort_keys=True)

    def _mined(self) -> list[str]:
        if getattr(self, "_mined_cache", None) is None:
            from stages.pairs.mine import MineStage

            self._mined_cache = MineStage(self.cfg, preset=self.params["preset"])._batches()
        return self._mined_cache

    def _batch_out(self, k: int) -> str:
        return self.layout.instructed_batch(self.params["preset"], self._mined()[k].rstrip("/").rsplit("/", 1)[-1])

    def plan(self) -> int:
        return len(self._mined())

    def item_outputs(self, k: int) -> list[str]:
        return [self.layout.marker(self._batch_out(k))]

    def item_done(self, k: int) -> bool:
        """Its marker exists and another writer's instructions are not what it holds."""
        m = storage.read_marker(self._batch_out(k))
        return m is not None and m.get("writer_key") == self.writer_key

    def final_outputs(self) -> list[str]:
        return [self.layout.marker(self.out)]

    def worker_model(self):
        """The local VLM of a local_vlm writer (a GPU where the worker has one); None for the others."""
        spec = self.params["writer"]
        if not spec or spec.get("kind") != "local_vlm":
            return None
        if getattr(self, "_vlm", None) is None:
            from mining.instructions.local_vlm import local_model

            self._vlm = local_model(InstructionConfig(**{k: v for k, v in spec.items() if k != "kind"}),
                                    self.cfg.models_dir)
        return self._vlm

    def setup(self) -> None:
        if (model := self.worker_model()) is not None:
            model.setup()

    def run(self, k: int) -> ItemReport:
        from stages.corpus.ingest import catalog_uris

        mined_dir, out = self._mined()[k], self._batch_out(k)
        if storage.read_marker(mined_dir) is None:
            raise FileNotFoundError(f"no complete mining batch under {mined_dir}")
        if storage.exists(self.layout.marker(out)):  # another writer's: its pairs.parquet is kept only if ours
            fs, path = storage.fs_path(self.layout.marker(out))
            fs.rm(path)
        mined_file = PairFiles(mined_dir).pairs
        mined, images = pair_ids_and_images(mined_file)
        writer = make_writer(self.params["writer"], self.cfg.root, self.cfg.models_dir, self.worker_model())
        uris = catalog_uris(self.cfg.root, images) if writer.needs_images else {}
        try:
            _, counts = instruct_pairs(iter_pair_batches(mined_file), writer, uris, mined_dir, self.cfg.ingest,
                                       mined=mined, writer_key=self.writer_key, out=out)
        finally:
            if isinstance(writer, ChatInstructionWriter):
                writer.close()
        counts = {**counts, "pairs": len(mined)}
        _reconcile(self.label, out, counts)
        storage.write_marker(out, {**storage.read_marker(out), "counts": counts, "writer_key": self.writer_key})
        return ItemReport(stage=self.label, item=k, counts=counts)

    def finalize(self, n: int) -> StageReport:
        from stages.synthesis.parts import add_counts

        if len(self._mined()) != n:
            raise RuntimeError(f"{self.label}: {n} items ran but the mining now has {len(self._mined())} batches")
        total: dict = {}
        names = []
        writer = self.params["writer"]["kind"]  # no batches: no writer ran
        for k in range(n):
            m = storage.read_marker(self._batch_out(k))
            if m is None or m.get("writer_key") != self.writer_key:
                raise RuntimeError(f"{self.label}: batch {self._batch_out(k)} is not instructed: run its item first")
            _reconcile(self.label, self._batch_out(k), m["counts"])
            add_counts(total, m["counts"])
            names.append(self._batch_out(k).rstrip("/").rsplit("/", 1)[-1])
            writer = m["writer"]
        total.setdefault("pairs", 0)
        _reconcile(self.label, self.out, total)
        storage.write_marker(self.out, {"counts": total, "batches": names, "writer": writer})
        self._remove_old_batches(set(names))
        self.stamp(self.out)
        return self.report()  # type: ignore[return-value]

    def _remove_old_batches(self, keep: set[str]) -> None:
        """Batch directories of earlier minings (this stage wrote them: a pairs file and a marker), and the
        one pairs file of a one-item instructed set."""
        fs, path = storage.fs_path(self.out)
        for p in fs.ls(path, detail=False) if fs.exists(path) else []:
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if PairFiles.BATCH.fullmatch(name) and name not in keep and fs.isdir(p):
                files = [q.rstrip("/").rsplit("/", 1)[-1].split(storage.TMP_TAG)[0] for q in fs.ls(p, detail=False)]
                if all(f in (PairFiles.table_name("pairs"), MARKER) for f in files):
                    fs.rm(p, recursive=True)
            elif name.split(storage.TMP_TAG)[0] == PairFiles.table_name("pairs"):
                fs.rm(p)

    def report(self) -> StageReport | None:
        m = self.current(storage.read_marker(self.out))
        return None if m is None else StageReport(stage=self.label, items=len(m["batches"]), outputs=[self.out],
                                                  counts={**m["counts"], "writer": m["writer"]})


def _reconcile(label: str, where: str, c: dict) -> None:
    """pairs = with + without an instruction."""
    got = c.get("with_instruction", 0) + c.get("without_instruction", 0)
    if c["pairs"] != got:
        raise RuntimeError(f"{label}: {where}: {c['pairs']} mined pairs, {got} with or without an instruction")
