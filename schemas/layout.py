"""Where everything lands under a run's root: the one module that spells directory and file names.

    <root>/.aceforge.lock    the run root's writer lock
    <root>/catalog/          plan.json, parts/part-NNNNN.{images,quarantine}.parquet, images.parquet,
                             duplicates.parquet, quarantine/quarantine.parquet
    <root>/embeddings/<e>/   plan.json, part-NNNNN.parquet (float16 vectors + ids)
    <root>/clusters/<e>/     fit.json, centroids.npy, split_log.json, assignments.parquet, and the by-cluster
                             layout: vectors.npy, ids.npy, offsets.npy, cluster_digest.npy
    <root>/pairs/<preset>/   batches/batch-NNNNN/, edges/sets/pairs/groups.parquet, drops.json, instructed/
    <root>/synth/<kind>/     part directories (records.parquet or the stage's own table), faces' pairs/
    <root>/shards/<name>/    <prefix>-NNNNNN.tar + .stats.json, manifest.parquet, README.md; encoded side sets
    <root>/checkpoints/<run>/ identity.json, metrics/, metrics.jsonl, live.json, eval/, data/, data-counts/
    <root>/checkpoints/exports/<run>/  the exported LoRA files and export.json
    <root>/models/tiny-random-flux-fill/  the tiny random base model of smoke runs
    <root>/cache/<what>/     caches (instruction replies: cache/instructions/<k2>/<key>.json)
    <root>/labels/<task>.parquet  people's verdicts on mined pairs (the labelling page, Label Studio imports)

Every stage directory is complete when its marker (`_SUCCESS.json`, written last) exists. Below every
package that writes (it imports only schemas.io), so trainer/ spells its paths here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from schemas.io import TMP_TAG, join

_TMP = re.escape(TMP_TAG)

MARKER = "_SUCCESS.json"
LOCK = ".aceforge.lock"
TINY_BASE = "tiny-random-flux-fill"
PAIR_TABLES = ("edges", "sets", "pairs", "groups")  # a preset's (and a batch's) tables, <name>.parquet


def safe_name(name: str) -> str:
    """A name usable as one path component (embedder names hold '/', spaces, parentheses)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@dataclass(frozen=True)
class RunLayout:
    root: str

    # the root's directories (a demo recognises its own root by CATALOG)
    CATALOG = "catalog"
    EMBEDDINGS = "embeddings"
    CLUSTERS = "clusters"
    PAIRS = "pairs"
    SYNTH = "synth"
    SHARDS = "shards"
    CHECKPOINTS = "checkpoints"
    EXPORTS = "exports"
    LEAKAGE = "leakage"
    MODELS = "models"
    CACHE = "cache"
    LABELS = "labels"
    INSTRUCTIONS = "instructions"  # the instruction-reply cache, under CACHE

    def _at(self, *parts: str) -> str:
        return join(self.root, *parts)

    @staticmethod
    def marker(dir_uri: str) -> str:
        return join(dir_uri, MARKER)

    @property
    def lock(self) -> str:
        """The run root's writer lock file."""
        return self._at(LOCK)

    # ingest
    @property
    def catalog(self) -> str:
        """The image catalog (ingest's output)."""
        return self._at(self.CATALOG)

    @property
    def ingest_plan(self) -> str:
        """Ingest's append-only plan: the listed inputs of each partition."""
        return CatalogFiles(self.catalog).plan

    def ingest_part(self, k: int, what: str) -> str:
        """One ingest partition's table; what: images, quarantine or hashes (its ids by hash bucket)."""
        return CatalogFiles(self.catalog).part(k, what)

    # embedding and clustering
    def embeddings(self, embedder: str) -> str:
        """One embedder's vectors, in partitions that follow the catalog's."""
        return self._at(self.EMBEDDINGS, safe_name(embedder))

    def embedding_part(self, embedder: str, k: int) -> str:
        """One embedding partition (float16 vectors + ids)."""
        return EmbeddingFiles(self.embeddings(embedder)).part(k)

    def clusters(self, embedder: str) -> str:
        """The K-means clustering of one embedder's vectors."""
        return self._at(self.CLUSTERS, safe_name(embedder))

    # pairs
    def pairs(self, preset: str) -> str:
        """One task preset's mined pairs."""
        return self._at(self.PAIRS, preset)

    def pair_batch(self, preset: str, k: int) -> str:
        """One mining batch's directory (a work item: a batch of clusters)."""
        return PairFiles(self.pairs(preset)).batch(k)

    def instructed(self, preset: str) -> str:
        """One preset's pairs with their instructions."""
        return PairFiles(self.pairs(preset)).instructed

    def instructed_batch(self, preset: str, batch_name: str) -> str:
        """One mining batch's pairs with their instructions (a work item: named as the mined batch)."""
        return join(self.instructed(preset), batch_name)

    # synthesis, shards, training
    def synth(self, kind: str) -> str:
        """One synthesis stage's parts."""
        return self._at(self.SYNTH, kind)

    def shards(self, name: str) -> str:
        """One shard set."""
        return self._at(self.SHARDS, name)

    def announced(self, resource: str) -> str:
        """The digests of the shard sets an event already announced for this resource."""
        return self._at(self.SHARDS, f"_announced-{resource}.json")

    @property
    def checkpoints_dir(self) -> str:
        """Every training run's folder (and exports/)."""
        return self._at(self.CHECKPOINTS)

    def checkpoints(self, run: str) -> str:
        """One training run's folder: its checkpoints, metrics and live state."""
        return join(self.checkpoints_dir, run)

    def leakage(self, digest: str) -> str:
        """One leakage check's report (an evaluation source against shard sets), named by what it compared."""
        return self._at(self.LEAKAGE, f"{digest}.json")

    def exports(self, run: str) -> str:
        """One training run's exported LoRA files."""
        return join(self.checkpoints_dir, self.EXPORTS, run)

    def models(self, name: str) -> str:
        """A model folder kept under the root (the tiny random base of smoke runs)."""
        return self._at(self.MODELS, name)

    def cache(self, what: str) -> str:
        """A cache (instruction replies: what = instructions)."""
        return self._at(self.CACHE, what)

    @property
    def instruction_cache(self) -> str:
        """The cache of instruction replies."""
        return self.cache(self.INSTRUCTIONS)

    def pair_labels(self, task: str) -> str:
        """People's verdicts on one task's pairs (appended to, rewritten whole through a temporary name)."""
        return self._at(self.LABELS, f"{safe_name(task)}.parquet")

    @staticmethod
    def cached_reply(cache: str, key: str) -> str:
        """One cached instruction reply in a cache folder, fanned out by the key's first two characters."""
        return join(cache, key[:2], f"{key}.json")


@dataclass(frozen=True)
class CatalogFiles:
    """<root>/catalog/"""
    where: ClassVar[str] = "catalog"
    uri: str

    @property
    def plan(self) -> str:
        """Ingest's append-only plan."""
        return join(self.uri, "plan.json")

    @property
    def parts_dir(self) -> str:
        """The per-partition tables."""
        return join(self.uri, "parts")

    def part(self, k: int, what: str) -> str:
        """One partition's table; what: images, quarantine or hashes (its ids by hash bucket)."""
        return join(self.parts_dir, f"part-{k:05d}.{what}.parquet")

    PART = re.compile(r"part-\d{5}\.(images|quarantine|hashes)\.parquet")

    @property
    def dedup_dir(self) -> str:
        """The exact-dedup units' results, one table per (generation, hash bucket)."""
        return join(self.uri, "dedup")

    def dedup(self, generation: int, bucket: int) -> str:
        """One dedup unit's rows: a generation's images of one hash bucket, each kept or a duplicate."""
        return join(self.dedup_dir, f"gen-{generation:04d}.bucket-{bucket:05d}.parquet")

    DEDUP = re.compile(r"gen-\d{4}\.bucket-\d{5}\.parquet")

    @property
    def images(self) -> str:
        """The accepted images (ImageRecord rows)."""
        return join(self.uri, "images.parquet")

    @property
    def duplicates(self) -> str:
        """Exact duplicates dropped, with the id they duplicate."""
        return join(self.uri, "duplicates.parquet")

    @property
    def quarantine(self) -> str:
        """Inputs that failed, with their reasons."""
        return join(self.uri, "quarantine", "quarantine.parquet")


@dataclass(frozen=True)
class EmbeddingFiles:
    """<root>/embeddings/<embedder>/"""
    where: ClassVar[str] = "embeddings"
    uri: str

    @property
    def plan(self) -> str:
        """The partition ranges embedded."""
        return join(self.uri, "plan.json")

    @staticmethod
    def part_name(k: int) -> str:
        """One partition's file name."""
        return f"part-{k:05d}.parquet"

    def part(self, k: int) -> str:
        """One partition (float16 vectors + ids)."""
        return join(self.uri, self.part_name(k))


@dataclass(frozen=True)
class ClusterFiles:
    """<root>/clusters/<embedder>/"""
    where: ClassVar[str] = "clusters"
    uri: str

    @property
    def fit(self) -> str:
        """The fit's settings, size and epoch (written last: without it a crash means a refit)."""
        return join(self.uri, "fit.json")

    @property
    def centroids(self) -> str:
        """k x d float32 unit centroids."""
        return join(self.uri, "centroids.npy")

    @property
    def split_log(self) -> str:
        """The oversized clusters split, in order."""
        return join(self.uri, "split_log.json")

    @property
    def assignments(self) -> str:
        """Each id's cluster, in embedding order."""
        return join(self.uri, "assignments.parquet")

    @property
    def vectors(self) -> str:
        """float16 vectors grouped by cluster."""
        return join(self.uri, "vectors.npy")

    @property
    def ids(self) -> str:
        """Ids grouped by cluster, row for row with vectors.npy."""
        return join(self.uri, "ids.npy")

    @property
    def offsets(self) -> str:
        """Each cluster's first row in vectors.npy and ids.npy (k + 1 entries)."""
        return join(self.uri, "offsets.npy")

    @property
    def digest(self) -> str:
        """Per cluster, an order-free digest of its members' ids."""
        return join(self.uri, "cluster_digest.npy")

    @property
    def generation_counts(self) -> str:
        """G x k: per generation (the rows of the fit, then each growth assigned to its centroids), each
        cluster's rows; a generation's rows of a cluster follow the earlier ones'."""
        return join(self.uri, "generation_counts.npy")

    @property
    def generation_digests(self) -> str:
        """G x k: the order-free digest of each generation's ids in each cluster."""
        return join(self.uri, "generation_digests.npy")

    @property
    def fitting(self) -> str:
        """The kmeans-fit stage's folder: its decision (policy, epoch) and the centroids assignment uses."""
        return join(self.uri, "fitting")

    @property
    def fit_plan(self) -> str:
        return join(self.fitting, "plan.json")

    @property
    def fit_centroids(self) -> str:
        return join(self.fitting, "centroids.npy")

    @property
    def labels(self) -> str:
        """The kmeans-assign stage's folder: labels per embedding partition."""
        return join(self.uri, "labels")

    def unit_labels(self, epoch: int, p: int, ext: str = "npy") -> str:
        """Partition p's nearest-centroid labels in an epoch (npy), and their rows, ids digest, cosine (json)."""
        return join(self.labels, f"e{epoch:04d}", f"part-{p:05d}.{ext}")

    def final_labels(self, key: str) -> str:
        """The labels after the oversized clusters are split, one file per partition (key: epoch and rows)."""
        return join(self.labels, f"final-{key}")

    def final_part(self, key: str, p: int) -> str:
        """Partition p's final labels."""
        return join(self.final_labels(key), f"part-{p:05d}.npy")

    def final_counts(self, key: str) -> str:
        """Each cluster's rows after the split (k entries)."""
        return join(self.final_labels(key), "counts.npy")

    def layout(self, key: str) -> str:
        """The by-cluster layout, one file pair per cluster range, and ranges.npy (first cluster per range)."""
        return join(self.uri, f"layout-{key}")

    def range_file(self, key: str, kind: str, r: int) -> str:
        """kind vectors / ids (.npy), or sums (.npz: the range's per-cluster digests and generation counts)."""
        return join(self.layout(key), f"{kind}-{r:05d}.{'npz' if kind == 'sums' else 'npy'}")

    def ranges(self, key: str) -> str:
        return join(self.layout(key), "ranges.npy")

    LABELS_DIR = re.compile(r"e\d{4}|final-e\d{4}-n\d+")
    LAYOUT_DIR = re.compile(r"layout-e\d{4}-n\d+")


@dataclass(frozen=True)
class PairFiles:
    """<root>/pairs/<preset>/, one of its batches, or its instructed/ folder"""
    where: ClassVar[str] = "pairs"
    uri: str

    @staticmethod
    def table_name(name: str) -> str:
        """The file name of one of PAIR_TABLES."""
        return f"{name}.parquet"

    def table(self, name: str) -> str:
        """One of PAIR_TABLES: edges, sets, pairs or groups."""
        return join(self.uri, self.table_name(name))

    @property
    def pairs(self) -> str:
        """The pair records."""
        return self.table("pairs")

    @property
    def drops(self) -> str:
        """Counts of dropped candidates by reason."""
        return join(self.uri, "drops.json")

    @property
    def batches(self) -> str:
        """The mining batches' directories."""
        return join(self.uri, "batches")

    def batch(self, k: int) -> str:
        """One mining batch's directory."""
        return join(self.batches, f"batch-{k:05d}")

    BATCH = re.compile(r"batch-\d{5}(-[0-9a-f]{8})?")  # a batch directory, content-named

    @property
    def instructed(self) -> str:
        """The pairs with their instructions (pairs.parquet, the marker)."""
        return join(self.uri, "instructed")


@dataclass(frozen=True)
class SynthFiles:
    """<root>/synth/<kind>/ or one of its part directories"""
    where: ClassVar[str] = "synth"
    uri: str

    RECORDS = "records.parquet"  # the table a part directory holds (one of these)
    FACES = "faces.parquet"
    REGIONS = "regions.parquet"
    CHAINS = "chains.parquet"
    BUCKETS = "buckets.parquet"
    FEATURES = "features.parquet"
    QUANTISER = "quantiser.parquet"

    @property
    def records(self) -> str:
        """A part's synthesized samples."""
        return join(self.uri, self.RECORDS)

    @property
    def faces(self) -> str:
        """A faces part's table: one face per kept image."""
        return join(self.uri, self.FACES)

    @property
    def regions(self) -> str:
        """A segmentation part's table: the regions of each image."""
        return join(self.uri, self.REGIONS)

    @property
    def chains(self) -> str:
        """A chains part's table."""
        return join(self.uri, self.CHAINS)

    @property
    def buckets(self) -> str:
        """A face-buckets part's table: its faces part's faces with their bucket, sorted by bucket."""
        return join(self.uri, self.BUCKETS)

    @property
    def features(self) -> str:
        """A style-features part's table: one catalog slice's style feature vectors."""
        return join(self.uri, self.FEATURES)

    @property
    def quantiser(self) -> str:
        """The face-buckets stage's centroids (one row per bucket), kept across runs."""
        return join(self.uri, self.QUANTISER)


@dataclass(frozen=True)
class ShardFiles:
    """<root>/shards/<name>/"""
    where: ClassVar[str] = "shards"
    uri: str

    @property
    def manifest(self) -> str:
        """One row per shard: samples, bytes, sha256, tasks."""
        return join(self.uri, self.MANIFEST)

    @property
    def card(self) -> str:
        """The dataset card whose features let `datasets.load_dataset(<set folder>)` read every field."""
        return join(self.uri, self.CARD)

    @property
    def samples(self) -> str:
        """One row per sample: key, shard, task, instruction, quality scores, thumbnail (the per-sample manifest)."""
        return join(self.uri, self.SAMPLES)

    @property
    def report(self) -> str:
        """The shard set's dataset report: a static HTML page (tasks, drops, score histograms, sample grid)."""
        return join(self.uri, self.REPORT)

    @staticmethod
    def unit_samples_name(prefix: str, unit: str) -> str:
        """One packing unit's rows of the samples table, written before its .unit.json."""
        return f"{prefix}-{unit}.samples.parquet"

    @staticmethod
    def thumb_dir(prefix: str, unit: str) -> str:
        """One packing unit's thumbnails (edit | mask | target strips of the samples the report shows)."""
        return f"thumbs/{prefix}-{unit}"

    @staticmethod
    def thumb_name(key: str) -> str:
        """One sample's thumbnail strip, in its unit's thumbnail folder."""
        return f"{key}.jpg"

    @staticmethod
    def tar_name(prefix: str, index: int) -> str:
        """One shard's file name."""
        return f"{prefix}-{index:06d}.tar"

    @staticmethod
    def stats_name(prefix: str, index: int) -> str:
        """One finished shard's stats file name (written after its tar)."""
        return f"{prefix}-{index:06d}.stats.json"

    @staticmethod
    def tar_pattern(prefix: str) -> str:
        """The shards' names as a %-format pattern of the shard index."""
        return f"{prefix}-%06d.tar"

    @staticmethod
    def unit_prefix(prefix: str, unit: str) -> str:
        """The shard-name prefix of one packing unit's shards: <prefix>-<unit>-NNNNNN.tar."""
        return f"{prefix}-{unit}"

    @staticmethod
    def unit_name(prefix: str, unit: str) -> str:
        """One packing unit's stats (its shards' rows and counts), written after its last shard."""
        return f"{prefix}-{unit}.unit.json"

    @staticmethod
    def owned(prefix: str) -> re.Pattern:
        """The files a packer with shard prefix `prefix` writes in a shard set folder: group `unit` is the
        packing unit (absent: a shard of one writer per set), and temporary names of them."""
        p = re.escape(prefix)
        return re.compile(rf"{p}-(?:(?P<unit>[A-Za-z0-9_-]+?)-)?\d{{6}}(?:\.tar|\.stats\.json)(?:{_TMP}.*)?"
                          rf"|{p}-(?P<unit_file>[A-Za-z0-9_-]+)\.(?:unit\.json|samples\.parquet)(?:{_TMP}.*)?")

    TAR = ".tar"
    STATS = ".stats.json"
    UNIT = ".unit.json"
    TAR_GLOB = "*.tar"

    MANIFEST = "manifest.parquet"
    CARD = "README.md"
    SAMPLES = "samples.parquet"
    REPORT = "report.html"
    THUMBS = "thumbs"

    def without_leaks(self, digest: str) -> str:
        """This set less the samples a leakage check found (a sibling folder, written by `filter`)."""
        return f"{self.uri.rstrip('/')}-noleak-{digest}"

    def encoded(self, form: str, max_tokens: int) -> str:
        """The side set of this set's samples encoded for one training setup (a sibling folder)."""
        return f"{self.uri.rstrip('/')}-encoded-{form}-{max_tokens}"


@dataclass(frozen=True)
class RunFiles:
    """<root>/checkpoints/<run>/"""
    where: ClassVar[str] = "checkpoints"
    uri: str

    IDENTITY = "identity.json"
    METRICS = "metrics"
    METRICS_LOG = "metrics.jsonl"
    LIVE = "live.json"
    EVAL = "eval"
    DATA = "data"
    COUNTS = "data-counts"

    @property
    def identity(self) -> str:
        """What the run trains on and how (a resumed run must match it)."""
        return join(self.uri, self.IDENTITY)

    @property
    def metrics(self) -> str:
        """The per-step metric files."""
        return join(self.uri, self.METRICS)

    @staticmethod
    def metric_name(step: int) -> str:
        """One step's metric file name."""
        return f"step-{step:07d}.json"

    @property
    def metrics_log(self) -> str:
        """Every step's metrics, one JSON line each, in step order."""
        return join(self.uri, self.METRICS_LOG)

    @property
    def live(self) -> str:
        """The live state the UI polls."""
        return join(self.uri, self.LIVE)

    @property
    def eval(self) -> str:
        """The evaluation records (one JSON file each)."""
        return join(self.uri, self.EVAL)

    @property
    def data(self) -> str:
        """The snapshot of the shard sets the run is named after."""
        return join(self.uri, self.DATA)

    @property
    def counts(self) -> str:
        """Per rank, the samples read and skipped."""
        return join(self.uri, self.COUNTS)

    @staticmethod
    def count_name(rank: int) -> str:
        """One rank's counts file name."""
        return f"rank-{rank:05d}.json"

    JSON = ".json"  # the metric, eval and count files'


@dataclass(frozen=True)
class CheckpointFiles:
    """One checkpoint folder under <root>/checkpoints/<run>/"""
    where: ClassVar[str] = "checkpoints"
    uri: str

    STATE = "state.json"
    WEIGHTS = "trainable.safetensors"
    OPTIMIZER = "optimizer.pt"

    @property
    def state(self) -> str:
        """The step and what the weights were trained from."""
        return join(self.uri, self.STATE)

    @property
    def weights(self) -> str:
        """The trainable weights."""
        return join(self.uri, self.WEIGHTS)

    @property
    def optimizer(self) -> str:
        """The optimiser's state."""
        return join(self.uri, self.OPTIMIZER)


@dataclass(frozen=True)
class ExportFiles:
    """<root>/checkpoints/exports/<run>/"""
    where: ClassVar[str] = "exports"
    uri: str

    MARKER = "export.json"
    DIFFUSERS = "diffusers"  # the diffusers LoRA folder
    COMFYUI = "comfyui_lora.safetensors"
    TRANSFORMER = "transformer"  # a full fine-tune's merged transformer folder

    @property
    def record(self) -> str:
        """Which checkpoint the exports are of (written last)."""
        return join(self.uri, self.MARKER)

    @property
    def diffusers_lora(self) -> str:
        """The LoRA in diffusers' format (`load_lora_weights` reads the folder)."""
        return join(self.uri, self.DIFFUSERS)

    @property
    def comfyui_lora(self) -> str:
        """The LoRA with kohya / ComfyUI keys, one file."""
        return join(self.uri, self.COMFYUI)


@dataclass(frozen=True)
class DemoFiles:
    """The demo's output folder (not a run root): its corpus and its run root"""
    where: ClassVar[str] = ""
    uri: str

    CORPUS = "corpus"
    GROUND_TRUTH = "ground_truth.json"  # in the corpus folder: each family's base, variants and transformation

    @property
    def root(self) -> str:
        """The demo's run root."""
        return join(self.uri, "root")

    @property
    def corpus(self) -> str:
        """The demo corpus: real photos, known transformations, odd and bad files."""
        return join(self.uri, self.CORPUS)

    @property
    def ground_truth(self) -> str:
        """The corpus's families, as built."""
        return join(self.corpus, self.GROUND_TRUTH)


FILE_SETS = (CatalogFiles, EmbeddingFiles, ClusterFiles, PairFiles, SynthFiles, ShardFiles, RunFiles,
             CheckpointFiles, ExportFiles, DemoFiles)
