"""The stage registry: every stage class in the order a run executes them, and the `Pipeline` a config makes.

A stage declares what the registry needs as class attributes (runtime/stage.py): `name`, `resources`,
`produces` (ACE tasks), `needs` (stage names), `config_section`, `scope`/`key` (its place in a run's
summary), `shard_set` (a producer: the set that packs its records) or `packs` (a pack stage), `ui_report`.
A stage is enabled when the config asks for it (`wanted`: a configured task it produces, or a mining stage),
when an enabled stage needs it, or, a pack stage, when the config asks for one of the producers it packs.

A new stage: its module, one `register` call (here, in STAGES, or from its module), and its config
sub-model; the flows, the pack stages, the UI reports and the command line's summary read it from here.
"""

from __future__ import annotations

from typing import Any, Iterator

from runtime.stage import Stage
from schemas.config import RunConfig
from stages.corpus.cluster_layout import KMeansStage
from stages.corpus.embed import EmbedStage
from stages.corpus.ingest import IngestStage
from stages.corpus.kmeans_units import KMeansAssignStage, KMeansFitStage
from stages.pairs.instruct import InstructStage
from stages.pairs.mine import MineStage
from stages.pairs.pack import PackStage, packs_groups
from stages.synthesis.chain_pack import ChainPackStage
from stages.synthesis.captions import CaptionStage
from stages.synthesis.chains import LongContextStage, MultiTurnStage
from stages.synthesis.face_buckets import FaceBucketsStage
from stages.synthesis.faces import FacePairsStage, FacesStage
from stages.synthesis.maps import MapsStage
from stages.synthesis.objects import ObjectsStage
from stages.synthesis.pack import SynthPackStage
from stages.synthesis.repaint import RepaintStage
from stages.synthesis.segment import SegmentStage
from stages.synthesis.style import StyleStage
from stages.synthesis.style_features import StyleBucketsStage, StyleFeaturesStage
from stages.synthesis.text import TextStage

# The order stages run in; a pack stage's producers are packed in this order too (the shard sets' sample
# order depends on it: objects, repaint, face pairs, text, maps; style, long_context, multi_turn).
STAGES: list[type[Stage]] = [
    IngestStage, EmbedStage, KMeansFitStage, KMeansAssignStage, KMeansStage, MineStage, InstructStage, PackStage,
    SegmentStage, ObjectsStage, RepaintStage, FacesStage, FaceBucketsStage, FacePairsStage, TextStage, MapsStage,
    CaptionStage,
    SynthPackStage,
    StyleFeaturesStage, StyleBucketsStage, StyleStage, LongContextStage, MultiTurnStage, ChainPackStage,
]


def register(cls: type[Stage], before: str | None = None) -> type[Stage]:
    """Add a stage class (at the end, or before the stage named `before`); usable as a decorator."""
    if any(c.name == cls.name for c in STAGES):
        raise ValueError(f"a stage named {cls.name!r} is registered already")
    at = STAGES.index(stage(before)) if before else len(STAGES)
    earlier = STAGES[:at]
    missing = [n for n in cls.needs if n not in {c.name for c in earlier}]
    if missing:
        raise ValueError(f"{cls.name} needs {', '.join(missing)}: register it after them")
    if cls.shard_set is not None and any(c.packs == cls.shard_set for c in earlier):
        raise ValueError(f"{cls.name} is packed into {cls.shard_set!r}: register it before that set's pack stage")
    STAGES.insert(at, cls)
    return cls


def unregister(cls: type[Stage]) -> None:
    STAGES.remove(cls)


def stage(name: str) -> type[Stage]:
    for c in STAGES:
        if c.name == name:
            return c
    raise KeyError(f"no registered stage {name!r}; registered: {', '.join(c.name for c in STAGES)}")


def producers(shard_set: str) -> list[type[Stage]]:
    """The registered stages whose records `shard_set` packs, in registry order."""
    return [c for c in STAGES if c.shard_set == shard_set]


def enabled(cfg: RunConfig) -> list[type[Stage]]:
    """The stage classes a config enables, in registry order."""
    on = {c.name for c in STAGES if c.packs is None and c.wanted(cfg)}
    todo = list(on)
    while todo:
        for n in stage(todo.pop()).needs:
            if n not in on:
                on.add(n)
                todo.append(n)
    on |= {c.name for c in STAGES if c.packs is not None and any(p.wanted(cfg) for p in producers(c.packs))}
    return [c for c in STAGES if c.name in on]


def config_section(cfg: RunConfig, cls: type[Stage]) -> Any:
    """The config sub-model a stage class reads (`config_section`, a dotted path from the RunConfig)."""
    section: Any = cfg
    for part in filter(None, cls.config_section.split(".")):
        section = getattr(section, part)
    return section


class Pipeline:
    """The stage instances a run executes, in order, each with where its counts go in the run's summary:
    (ingest ->) embed -> kmeans-fit -> kmeans-assign -> kmeans -> per preset: mine -> instructions -> pack (group presets: mine -> pack);
    then the enabled synthesis producers, the synthesis pack, the chain producers, the chain pack."""

    def __init__(self, cfg: RunConfig, source: str | None = None, writer: dict[str, Any] | None = None,
                 shard_prefix: str = "mined"):
        self.cfg, self.source, self.writer, self.shard_prefix = cfg, source, writer, shard_prefix
        self.on = enabled(cfg)

    def __iter__(self) -> Iterator[tuple[tuple[str, ...], Stage]]:
        yield from self.mining()
        yield from self.synthesis()

    def shard_name(self, cls: type[Stage]) -> str:
        """The shard set a synthesis pack stage writes: <prefix>-<synthesis.shard_name>[-<set>]."""
        base = f"{self.shard_prefix}-{self.cfg.synthesis.shard_name}"
        return base if cls.packs == "synthesis" else f"{base}-{cls.packs}"

    def mining(self, announce_unpacked: bool = True) -> Iterator[tuple[tuple[str, ...], Stage]]:
        cfg = self.cfg
        for cls in self.on:
            if cls.scope == "run" and cls is not IngestStage or cls is IngestStage and self.source is not None:
                yield (cls.key,), (cls(cfg, source=self.source) if cls is IngestStage else cls(cfg))
        preset_stages = [c for c in self.on if c.scope == "preset"]
        for name in cfg.mining.presets:
            for cls in preset_stages:
                if packs_groups(name) and cls is InstructStage:
                    continue  # series: the groups of each union-find set, with template instructions (no pair writer)
                if not packs_groups(name) and self.writer is None and cls in (InstructStage, PackStage):
                    if announce_unpacked and cls is InstructStage:
                        print(f"{name}: mining.instructions.backend is none; pairs stay in pairs/, unpacked")
                    continue
                if cls is PackStage:
                    st: Stage = cls(cfg, preset=name, shard_name=f"{self.shard_prefix}-{name}")
                elif cls is InstructStage:
                    st = cls(cfg, preset=name, writer=self.writer)
                else:
                    st = cls(cfg, preset=name)
                yield (name, cls.key), st

    def synthesis(self, shard_sets: tuple[str, ...] | None = None) -> Iterator[tuple[tuple[str, ...], Stage]]:
        """The synthesis stages (scope "synthesis"); `shard_sets` limits them to the producers and packs of
        those shard sets (what they need runs before them, with the earlier shard sets)."""
        for cls in self.on:
            if cls.scope != "synthesis" or shard_sets is not None and not ({cls.shard_set, cls.packs} & set(shard_sets)):
                continue
            yield ("synthesis", cls.key), (cls(self.cfg, shard_name=self.shard_name(cls)) if cls.packs
                                           else cls(self.cfg))

    def describe(self) -> str:
        """The DAG the config enables: each stage in order, what it needs, its items, resources, outputs and
        the tasks it produces."""
        from store import storage

        lines = [f"pipeline of {self.cfg.root}; stages enabled: {', '.join(c.name for c in self.on)}"
                 + ("" if self.source else " (no source: ingest runs only with one)")]
        for path, st in [*self.mining(announce_unpacked=False), *self.synthesis()]:
            lines += _describe(st, path, self.cfg, storage)
        if self.writer is None:
            lines.append("mining.instructions.backend is none: pairs stay in pairs/, unpacked")
        return "\n".join(lines)


def _items(st: Stage, storage) -> str:
    try:
        done = st.report()
        if done is not None:
            return f"{done.items} (complete)"
        if st.plan_outputs() or not all(storage.read_marker(d) is not None for d in st.inputs()):
            return "planned at run time"
        return str(st.plan())
    except Exception:  # inputs missing or unreadable: the run plans them
        return "planned at run time"


def _describe(st: Stage, path: tuple[str, ...], cfg: RunConfig, storage) -> list[str]:
    cls = type(st)
    if cls.packs:
        needs = [p.name for p in producers(cls.packs) if p(cfg).packed_tasks()]
        tasks = [t for p in producers(cls.packs) for t in p(cfg).packed_tasks()]
    else:
        needs, tasks = list(cls.needs), st.packed_tasks()
    if cls is PackStage and packs_groups(st.params["preset"]):
        needs = [MineStage.name]
    if cls is MineStage or cls is PackStage:
        from mining.pairs.presets import preset

        tasks = [preset(st.params["preset"]).task]
    r = st.worker_resources()
    try:
        outputs = getattr(st, "out", None) or ", ".join(st.final_outputs())
    except Exception:
        outputs = "decided at run time"
    return [f"{st.label}  [{cls.name}]",
            f"  needs:     {', '.join(needs) or '-'}",
            f"  items:     {_items(st, storage)}",
            f"  resources: {r.cpus:g} cpu, {r.gpus:g} gpu" + (f", {r.memory_mb} MiB" if r.memory_mb else "")
            + (" (model: loaded once per worker)" if cls.model else ""),
            f"  outputs:   {outputs}",
            f"  tasks:     {', '.join(tasks) or '-'}",
            f"  config:    {cls.config_section or '-'}; summary: {'.'.join(path)}"]
