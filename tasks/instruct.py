"""Give mined pairs their instruction, then turn the instructed pairs into AceSamples.

<root>/pairs/<preset>/instructed/pairs.parquet holds every pair with its instruction (or none) and is
oriented the way the instruction runs; the marker counts pairs with and without one. Pairs without an
instruction stay there and are never packed.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterator

from mining.decode import normalized_bytes
from mining.instructions import (ChatInstructionWriter, InstructionError, InstructionWriter, KnownTransformWriter,
                                 TemplateInstructionWriter)
from schemas.arrow import from_table, to_table
from schemas.config import IngestConfig, InstructionConfig
from schemas.records import AceSample, ConditionUnit, Generator, ImageRecord, PairRecord, Role
from tasks import storage
from tasks.sources import read_uri
from tasks.stage import Resources, SingleUnitStage, StageReport, UnitReport


def _image(rec: ImageRecord, cfg: IngestConfig) -> tuple[bytes, str]:
    return normalized_bytes(read_uri(rec.uri), max_pixels=cfg.max_pixels, min_side=1)


def _previous(out: str, writer: str) -> list[PairRecord]:
    """The instructed pairs an earlier run of the same writer left in `out` (its marker removed because the
    mined pairs grew); none when there are none or another writer made them."""
    uri = storage.join(out, "pairs.parquet")
    if not storage.exists(uri):
        return []
    table = storage.read_parquet(uri)
    if (table.schema.metadata or {}).get(b"writer", b"").decode() != writer:
        return []
    return from_table(table, PairRecord)  # type: ignore[return-value]


def instruct_pairs(pairs: list[PairRecord], writer: InstructionWriter, catalog: dict[str, ImageRecord],
                   pairs_uri: str, ingest_cfg: IngestConfig | None = None,
                   progress: Callable[[int], None] | None = None) -> tuple[str, dict[str, int]]:
    """An instruction for each pair. Pairs an earlier run of this writer instructed keep their instruction
    and their order; new pairs come after them (so a shard set re-packed after new images landed keeps
    its finished shards)."""
    ingest_cfg = ingest_cfg or IngestConfig()
    out = storage.join(pairs_uri, "instructed")
    marker = storage.read_marker(out)
    if marker is not None:
        return out, marker["counts"]
    counts: Counter[str] = Counter()
    mined = {p.pair_id for p in pairs}
    done: list[PairRecord] = [p for p in _previous(out, writer.name) if p.pair_id in mined]
    reused = {p.pair_id for p in done}
    for p in done:
        counts["with_instruction" if p.instruction else "without_instruction"] += 1
    if done:
        counts["reused"] = len(done)
    gen = Generator(name=writer.name.rsplit(":", 1)[0], version=writer.name.rsplit(":", 1)[-1])
    for p in (p for p in pairs if p.pair_id not in reused):
        src, tgt = (_image(catalog[p.source_id], ingest_cfg), _image(catalog[p.target_id], ingest_cfg)) \
            if writer.needs_images else ((b"", "png"), (b"", "png"))
        try:
            ins = writer.write(p, src[0], tgt[0], src[1], tgt[1])
        except InstructionError:
            ins = None
            counts["writer_error"] += 1
        if ins is None:
            counts["without_instruction"] += 1
            done.append(p)
        else:
            counts["with_instruction"] += 1
            a, b = (p.target_id, p.source_id) if ins.swapped else (p.source_id, p.target_id)
            lineage = p.lineage.model_copy(update={"source_ids": [a, b], "generators": [*p.lineage.generators, gen]})
            done.append(p.model_copy(update={"source_id": a, "target_id": b, "instruction": ins.instruction,
                                             "lineage": lineage}))
        if progress:
            progress(1)
    table = to_table(done, PairRecord)
    storage.atomic_write_parquet(storage.join(out, "pairs.parquet"), table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"writer": writer.name.encode()}))
    storage.write_marker(out, {"counts": dict(counts), "writer": writer.name})
    return out, dict(counts)


def load_instructed(uri: str) -> list[PairRecord]:
    if storage.read_marker(uri) is None:
        raise FileNotFoundError(f"no complete instructed pairs under {uri}")
    return from_table(storage.read_parquet(storage.join(uri, "pairs.parquet")), PairRecord)  # type: ignore


def pair_samples(pairs: list[PairRecord], catalog: dict[str, ImageRecord],
                 ingest_cfg: IngestConfig | None = None) -> Iterator[AceSample]:
    """One AceSample per pair that has an instruction: edit = source, target = target."""
    ingest_cfg = ingest_cfg or IngestConfig()
    for p in pairs:
        if not p.instruction:
            continue
        src, tgt = _image(catalog[p.source_id], ingest_cfg), _image(catalog[p.target_id], ingest_cfg)
        yield AceSample(key=f"{p.task}-{p.pair_id}", task=p.task, instruction=p.instruction,
                        units=[ConditionUnit(role=Role.EDIT, image=src[0], image_ext=src[1])],
                        target=ConditionUnit(role=Role.TARGET, image=tgt[0], image_ext=tgt[1]),
                        lineage=p.lineage)


def demo_known_writer(corpus_dir: str, root: str) -> KnownTransformWriter:
    """Instructions of the demo corpus' known transformations, keyed by catalog ids."""
    from tasks.demo_corpus import family_member_ids
    from tasks.ingest import load_catalog

    known = {}
    for members in family_member_ids(corpus_dir, load_catalog(root)).values():
        (_, base), *variants = members
        for m, var in variants:
            if base and var and m["instruction"]:
                known[(base, var)] = m["instruction"]
    return KnownTransformWriter(known)


def make_writer(spec: dict, root: str) -> InstructionWriter:
    """{'kind': 'template'}, {'kind': 'chat', ...InstructionConfig fields} or
    {'kind': 'demo', 'corpus': <demo corpus folder>}."""
    if spec["kind"] == "demo":
        return demo_known_writer(spec["corpus"], root)
    if spec["kind"] == "template":
        return TemplateInstructionWriter()
    ic = InstructionConfig(**{k: v for k, v in spec.items() if k != "kind"})
    return ChatInstructionWriter(ic.base_url, ic.model, storage.join(root, "cache", "instructions"),
                                 api_key_env=ic.api_key_env, timeout_s=ic.timeout_s, retries=ic.retries)


class InstructStage(SingleUnitStage):
    """<root>/pairs/<preset>/instructed/: an instruction for every mined pair (one unit)."""

    name = "instructions"
    resources = Resources(cpus=0.5)

    @property
    def label(self) -> str:
        return f"instructions-{self.params['preset']}"

    @property
    def out(self) -> str:
        return self.layout.instructed(self.params["preset"])

    def inputs(self) -> list[str]:
        return [self.layout.pairs(self.params["preset"])]

    def settings(self) -> dict:
        return {"writer": self.params["writer"]}

    def run(self, k: int) -> UnitReport:
        from tasks.ingest import catalog_lookup
        from tasks.mine_pairs import load_pairs

        pairs_uri = self.layout.pairs(self.params["preset"])
        pairs = load_pairs(pairs_uri)
        writer = make_writer(self.params["writer"], self.cfg.root)
        by_id = catalog_lookup(self.cfg.root, {i for p in pairs for i in (p.source_id, p.target_id)}) \
            if writer.needs_images else {}
        _, counts = instruct_pairs(pairs, writer, by_id, pairs_uri, self.cfg.ingest)
        self.stamp(self.out)
        return UnitReport(stage=self.label, unit=k, counts=counts)

    def report(self) -> StageReport | None:
        m = self.current(storage.read_marker(self.out))
        return None if m is None else StageReport(stage=self.label, units=1, outputs=[self.out],
                                                  counts={**m["counts"], "writer": m["writer"]})
