"""The stage contract: every step of the pipeline is a Stage, run by either executor (runtime/executors.py).

A stage has a name, the resources one of its workers needs, and four steps:

    plan()        -> n               how many work items (reads its inputs' markers, may write a plan)
    run(k)        -> ItemReport      item k, writing only `item_outputs(k)`, each through a temporary name
    finalize(n)   -> StageReport     merges the items, reconciles counts, writes the stage marker last
    report()      -> StageReport|None  the finished stage's report, read from its marker (None: not done)

The executor (runtime/executors.py) owns the life cycle around them: a stage whose report is current is not
planned, an item whose outputs exist (`item_done`) is not run, `setup()` runs once per worker before its
first item, and each item is timed. So `run(k)` only computes: it never checks its own outputs or loads
models. Model stages set `model = True` (a worker is then a Ray actor) and name the wrapper whose
`resources()` one worker holds (`worker_model`). A stage holds only its config and parameters (`spec()`),
so a Ray worker or a Prefect task run rebuilds it with `build(spec)`: paths travel, never payloads.
Algorithms live in mining/ and trainer/; stages stay thin.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from pydantic import BaseModel, Field

from schemas.config import RunConfig
from schemas.resources import Resources
from store import storage
from schemas.layout import RunLayout

if TYPE_CHECKING:
    from mining.models.base import ModelWrapper

__all__ = ["Execution", "ItemReport", "Resources", "SingleItemStage", "Stage", "StageReport", "build"]


class ItemReport(BaseModel):
    stage: str
    item: int
    counts: dict[str, Any] = Field(default_factory=dict)
    skipped: bool = False  # its outputs existed: run(k) was not called
    seconds: float | None = None  # wall time of run(k), measured by the executor
    setup_seconds: float | None = None  # the worker's setup() ran before this item (its first), and took this
    # the running process's resident set (MiB) before run(k) and its peak during it (None: not measurable);
    # a reused worker process starts above zero: the item's own growth is peak - before
    rss_before_mb: float | None = None
    peak_rss_mb: float | None = None
    node: str | None = None  # the Ray node that ran it (None: run in the driver's process)


class Execution(BaseModel):
    """What the executor saw of one run of a stage's items (not stored in any marker: timings vary)."""

    items: int = 0
    ran: int = 0
    skipped: int = 0
    setups: int = 0  # workers that called setup(): at most one per worker
    seconds: float = 0.0  # run(k) wall time summed over the items that ran
    slowest: float = 0.0
    setup_seconds: float = 0.0
    counts: dict[str, Any] = Field(default_factory=dict)  # the numeric counts of the items that ran, summed
    peak_rss_mb: float = 0.0  # the largest peak RSS of a process while it ran one item (MiB; 0: not measured)
    rss_growth_mb: float = 0.0  # the largest rise of one item's peak over its process's RSS before it
    nodes: int = 0  # distinct Ray nodes that ran items (0: none ran on Ray)

    @classmethod
    def of(cls, items: list[ItemReport]) -> Execution:
        ran = [u for u in items if not u.skipped]
        counts: dict[str, Any] = {}
        for u in ran:
            _add_counts(counts, u.counts)
        times = [u.seconds or 0.0 for u in ran]
        setups = [u.setup_seconds for u in items if u.setup_seconds is not None]
        peaks = [u for u in ran if u.peak_rss_mb is not None]
        return cls(items=len(items), ran=len(ran), skipped=len(items) - len(ran), setups=len(setups),
                   seconds=sum(times), slowest=max(times, default=0.0), setup_seconds=sum(setups), counts=counts,
                   peak_rss_mb=max((u.peak_rss_mb for u in peaks), default=0.0),
                   rss_growth_mb=max((u.peak_rss_mb - (u.rss_before_mb or 0.0) for u in peaks), default=0.0),
                   nodes=len({u.node for u in ran if u.node}))


def _add_counts(total: dict[str, Any], counts: dict[str, Any]) -> None:
    for k, v in counts.items():
        if isinstance(v, dict):
            _add_counts(total.setdefault(k, {}), v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(total.get(k, 0), (int, float)):
            total[k] = total.get(k, 0) + v


class StageReport(BaseModel):
    stage: str
    items: int
    outputs: list[str]  # the stage's completed output directories
    counts: dict[str, Any] = Field(default_factory=dict)  # from the stage's outputs (finalize / its marker)
    execution: Execution | None = None  # this run's items; None when the stage was complete already


class Stage(ABC):
    name: ClassVar[str]  # the stage kind; `label` adds its parameters (a preset, a shard set)
    item_name: ClassVar[str] = "item"  # Prefect task runs are `<label>-<item_name>-<k>`
    single: ClassVar[bool] = False  # one item only: its task run is named `<label>`
    resources: ClassVar[Resources] = Resources()
    model: ClassVar[bool] = False

    # what the registry (stages/registry.py) reads; plain declarations, no behaviour
    produces: ClassVar[tuple[str, ...]] = ()  # the ACE tasks whose records it makes (synthesis.tasks enable it)
    needs: ClassVar[tuple[str, ...]] = ()  # names of the registered stages it reads
    config_section: ClassVar[str] = ""  # dotted path of its RunConfig sub-model, e.g. "synthesis.text"
    scope: ClassVar[str] = "synthesis"  # where its counts go in a run's summary: run, preset or synthesis
    key: ClassVar[str] = ""  # its key there (its counts: summary[key], [preset][key] or ["synthesis"][key])
    shard_set: ClassVar[str | None] = None  # a producer: which shard set ("synthesis", "chains") packs it
    packs: ClassVar[str | None] = None  # a pack stage: the shard set whose producers it packs
    ui_report: ClassVar[str | None] = None  # the UI report it gets (a name flows/reports.py dispatches on)
    always: ClassVar[bool] = False  # runs whatever synthesis.tasks holds (the mining stages)

    def __init__(self, cfg: RunConfig, **params: Any):
        self.cfg = cfg
        self.params = params
        self.layout = RunLayout(cfg.root)

    @classmethod
    def wanted(cls, cfg: RunConfig) -> bool:
        """Whether the config asks for it by itself (a configured task it produces)."""
        return cls.always or any(t in cls.produces for t in cfg.synthesis.tasks)

    # a producer, as its pack stage sees it
    def packed_tasks(self) -> list[str]:
        """The tasks its shard set packs from its records, in config order."""
        return [t for t in self.cfg.synthesis.tasks if t in self.produces]

    def samples(self, rec: dict, tasks: list[str]) -> Iterator[Any]:
        """The AceSamples one of its records gives for `tasks`."""
        raise NotImplementedError(f"{self.name} makes no samples")

    def record_parts(self) -> list[str]:
        """The directories holding its records, in order (its pack stage packs each as one unit): those its
        finished marker lists under `parts`, else its output directory itself."""
        out: str = self.out  # type: ignore[attr-defined]
        names = (storage.read_marker(out) or {}).get("parts")
        return [storage.join(out, n) for n in names] if names else [out]

    @staticmethod
    def expected(counts: dict[str, Any], task: str) -> int:
        """Samples of `task` its finished marker's counts promise the pack stage."""
        return counts["samples"].get(task, 0)

    # its place in a run's summary and the command line's summary
    def summary_entry(self, counts: dict[str, Any], ran_now: bool) -> dict[str, Any]:
        """What the run summary holds for it."""
        return counts

    @classmethod
    def summary(cls, counts: dict[str, Any], group: dict[str, Any], name: str) -> str | None:
        """Its lines in the command line's summary (None: none); `group` holds it and its siblings' counts,
        under `name` (a preset, or "synthesis")."""
        return None

    # identity
    @property
    def label(self) -> str:
        return self.name

    def item_label(self, k: int) -> str:
        return self.label if self.single else f"{self.label}-{self.item_name}-{k}"

    def spec(self) -> dict[str, Any]:
        return {"stage": type(self).__module__ + ":" + type(self).__qualname__,
                "config": self.cfg.model_dump(mode="json"), "params": self.params}

    def worker_model(self) -> ModelWrapper | None:
        """The model wrapper whose `resources()` one worker of this stage holds; None: `resources`."""
        return None

    def worker_resources(self) -> Resources:
        model = self.worker_model()
        return self.resources if model is None else model.resources()

    # the four steps
    def setup(self) -> None:
        """Load what every item of this worker shares (model weights). The executor calls it once per
        worker, before the first item that runs; never when every item is done."""

    @abstractmethod
    def plan(self) -> int: ...

    def plan_outputs(self) -> list[str]:
        """What `plan` writes (a listing); none by default: planning is then cheap enough to repeat."""
        return []

    @abstractmethod
    def final_outputs(self) -> list[str]:
        """The markers `finalize` writes last: the stage is complete when they all exist."""

    @abstractmethod
    def item_outputs(self, k: int) -> list[str]: ...

    @abstractmethod
    def run(self, k: int) -> ItemReport: ...

    @abstractmethod
    def finalize(self, n: int) -> StageReport: ...

    @abstractmethod
    def report(self) -> StageReport | None:
        """The finished stage's report, read back from its marker; None while it is not complete."""

    # what a finished stage was made from: a marker is current only while this is unchanged
    def inputs(self) -> list[str]:
        """The upstream output directories this stage reads (their markers are part of its version)."""
        return []

    def settings(self) -> dict[str, Any]:
        """The configuration that decides this stage's outputs (not workers, batch sizes or paths)."""
        return {}

    def version(self) -> str:
        """A digest of the settings and the inputs' markers, stored in the stage's marker: a stage whose
        inputs grew (new files ingested) or whose settings changed runs again; its finished items are kept."""
        data = {"settings": self.settings(), "inputs": [storage.read_marker(u) for u in self.inputs()]}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def current(self, marker: dict[str, Any] | None) -> dict[str, Any] | None:
        """The marker when it was written for this version; None when it is missing or stale."""
        return marker if marker is not None and marker.get("stage_version") == self.version() else None

    def stamp(self, dir_uri: str) -> None:
        """Record the version in the marker `finalize` just wrote."""
        marker = storage.read_marker(dir_uri)
        if marker is None:
            raise RuntimeError(f"{dir_uri} has no marker to stamp")
        storage.write_marker(dir_uri, {**marker, "stage_version": self.version()})

    def invalidate(self) -> list[str]:
        """Remove this stage's markers when they are stale (nothing else): the stage then plans and
        finalizes again, and its items that are still valid are skipped. Returns what was removed."""
        stale = [o for o in self.final_outputs() if storage.exists(o)]
        for o in stale:
            fs, path = storage.fs_path(o)
            fs.rm(path)
        return stale

    def complete(self) -> bool:
        return self.report() is not None

    def item_done(self, k: int) -> bool:
        outs = self.item_outputs(k)
        return bool(outs) and all(storage.exists(o) for o in outs)


def build(spec: dict[str, Any]) -> Stage:
    """The stage a spec describes (in any process: the module is imported by name)."""
    module, _, cls = spec["stage"].partition(":")
    stage_cls = getattr(importlib.import_module(module), cls)
    return stage_cls(RunConfig.model_validate(spec["config"]), **spec["params"])


class SingleItemStage(Stage):
    """A stage of one item whose output is one directory, `out`, complete when its marker exists."""

    single = True

    @property
    @abstractmethod
    def out(self) -> str: ...

    def plan(self) -> int:
        return 1

    def item_outputs(self, k: int) -> list[str]:
        return [self.layout.marker(self.out)]

    def final_outputs(self) -> list[str]:
        return self.item_outputs(0)

    def finalize(self, n: int) -> StageReport:
        rep = self.report()
        if rep is None:
            raise RuntimeError(f"{self.out} has no marker: the item of {self.label} did not complete")
        return rep
