"""Chains (ACE B.9): long-context chains of single-image edits over one image, and multi-turn chains over
one mined set. Each turn's output is the next turn's input; each turn's instruction is kept.

long_context (<root>/synth/long_context/, one item per object-removal part): the removal records of one
source are its turns. Turn 1 is the first record (x0 -> x1, already verified); turn k inpaints record k's
mask on x(k-1) with the same inpainter and the same verification as the removals (x(k-1) -> xk). A chain
stops at its first failed turn. Each kept turn k >= 2 is a sample: x0..x(k-2) as references, x(k-1) as the
edit input with turn k's mask, xk the target. Counts: sources = chained + dropped by reason; turns after
the first = samples + dropped by reason.

multi_turn (<root>/synth/multi_turn/, one part per instructed batch of `synthesis.chains.preset`: a batch
holds whole clusters, so a set's pairs are in one part): a batch's instructed pairs, read in record batches
(id and instruction columns only), are split into their connected groups (the pairs of one set).
Each group is walked into conversations: a turn's input is an image the conversation has already shown,
the newest one first (a chain a -> b -> c), else an earlier one (a branch). A conversation of two or more
turns is one sample: every image before its last target, in order of appearance, the last turn's input as
the edit input, the others as references. Counts: pairs = in conversations + dropped by reason;
conversations = samples + dropped by reason.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.pairs.band import UnionFind
from mining.instructions.chains import CHAIN_TEMPLATER, chain_instruction
from mining.instructions.synthesis import synth_instruction
from mining.objects.verify import VERIFIER, verify_removal
from schemas.layout import PairFiles
from store import storage
from stages.synthesis.chain_records import CHAIN_SCHEMA, CHAINS, chain_line, chain_samples, write_chain_records
from runtime.stage import ItemReport, Resources, StageReport
from stages.synthesis.objects import ObjectsStage
from stages.synthesis.parts import RECORDS, PartStage, check_sum, count_reasons, digest, load_source, png, unpng

CHAIN_STAGE_TASKS = ("long_context", "multi_turn")


class LongContextStage(PartStage):
    name = "synth-long-context"
    kind = "long_context"
    produces, needs, shard_set = ("long_context",), ("synth-objects",), "chains"
    key, config_section, ui_report = "long_context", "synthesis.chains", "chains"
    samples = staticmethod(chain_samples)
    summary = classmethod(chain_line)

    @staticmethod
    def expected(counts: dict, task: str) -> int:
        return counts["samples"]
    table = CHAINS
    model = True

    def __init__(self, cfg, **params):
        super().__init__(cfg, **params)
        self.objects = ObjectsStage(cfg)
        self.inpainter = self.objects.inpainter  # the removals' own inpainter: the same for every turn

    def inputs(self) -> list[str]:
        return [self.objects.out]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        return {"max_turns": s.chains.max_turns, "seed": s.seed, "objects": self.objects.settings()}

    def worker_model(self):
        return self.inpainter

    def setup(self) -> None:
        self.inpainter.setup()
        self.objects.setup_checks()

    def _object_part(self, k: int) -> str:
        m = storage.read_marker(self.objects.out)
        if m is None:
            raise FileNotFoundError(f"no complete object removals under {self.objects.out}")
        return storage.join(self.objects.out, m["parts"][k])

    def _ranges(self):
        return self.objects._ranges()

    def item_key(self, k: int) -> str:
        return self._object_part(k).rsplit("/", 1)[-1]

    def run(self, k: int) -> ItemReport:
        part = self.parts()[k]
        s = self.cfg.synthesis
        table = storage.read_parquet(storage.join(self._object_part(k), RECORDS))
        by_source: dict[str, list[int]] = defaultdict(list)
        for i, sid in enumerate(table.column("source_id").to_pylist()):
            by_source[sid].append(i)
        chains: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        rows: list[dict] = []
        turns_tried = 0
        settings = self.settings()
        for source, idx in by_source.items():
            if len(idx) < 2:
                chains["dropped: single_object"] += 1
                continue
            recs = table.take(idx[: s.chains.max_turns]).to_pylist()  # this source's records only
            images = [unpng(recs[0]["edit_png"]), unpng(recs[0]["target_png"])]
            first = json.loads(recs[0]["instructions"]).get("object_removal")
            texts = [first or synth_instruction("object_removal", recs[0]["sample_id"], s.seed)]
            gens = [[n, v] for n, v in json.loads(recs[0]["generators"])]
            scores: dict[str, float] = {}
            kept_turns = 0
            turns_tried += len(recs) - 1
            for t, rec in enumerate(recs[1:], start=2):
                mask = unpng(rec["mask_png"]) > 0
                result = self.inpainter(images[-1], mask)
                reason, sc = verify_removal(images[-1], result, mask, s.verify)
                if reason is None:  # the same further checks as the removals (refound object, artefacts)
                    reason = self.objects.post_checks(result, unpng(rec["object_png"]) > 0, sc)
                if reason is not None:
                    dropped[reason] += 1
                    dropped["after_failed_turn"] += len(recs) - t
                    break
                images.append(result)
                labels = json.loads(rec["labels"] or "{}")
                texts.append(synth_instruction("object_removal", rec["sample_id"], s.seed,
                                               object_name=labels.get("object_name")))
                scores.update({f"turn{t}_{n}": v for n, v in sc.items()})
                key = digest([source, t, settings], 20)
                turns = [(texts[i], i + 1, i + 2) for i in range(t - 1)] + [(texts[t - 1], t, None)]
                rows.append({"sample_id": key, "kind": "long_context", "source_ids": json.dumps([source]),
                             "inputs": [png(im) for im in images[:t]], "roles": ["reference"] * (t - 1) + ["edit"],
                             "edit_mask": rec["mask_png"], "target_png": png(result),
                             "instructions": json.dumps({"long_context": chain_instruction(turns, key, s.seed)}),
                             "generators": json.dumps(gens + [list(VERIFIER), list(CHAIN_TEMPLATER)]),
                             "scores": json.dumps({**scores, "turn": float(t)}), "labels": None})
                kept_turns += 1
            chains["chained" if kept_turns else "dropped: first_turn_failed"] += 1
        counts = {"sources": len(by_source), "chains": count_reasons(chains), "turns": turns_tried,
                  "samples": len(rows), "dropped": count_reasons(dropped)}
        self.reconcile(counts)
        write_chain_records(part, rows, counts)
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["sources"], c["chains"], "sources")
        check_sum(self.label, c["turns"], c["samples"] + sum(c["dropped"].values()), "turns after the first")


def conversations(pairs: list[tuple[str, str, str, str]], max_turns: int,
                  rng: np.random.Generator) -> list[list[tuple[str, str, str, str]]]:
    """Walk the pairs (pair_id, source, target, instruction) of one group into conversations: start from
    an unused pair, then take an unused pair whose source is the newest image shown (a chain), else one
    whose source was shown earlier (a branch), never one whose target was shown; up to `max_turns`."""
    unused = [pairs[i] for i in rng.permutation(len(pairs))]
    out = []
    while unused:
        conv = [unused.pop(0)]
        shown = [conv[0][1], conv[0][2]]
        while len(conv) < max_turns:
            options = [p for p in unused if p[1] in shown and p[2] not in shown]
            if not options:
                break
            nxt = max(options, key=lambda p: shown.index(p[1]))  # the newest input first
            unused.remove(nxt)
            conv.append(nxt)
            shown.append(nxt[2])
        out.append(conv)
    return out


class MultiTurnStage(PartStage):
    """One part per instructed batch: a batch holds whole clusters, so the pairs of a set are in one part."""

    name = "synth-multi-turn"
    kind = "multi_turn"
    table = CHAINS
    resources = Resources(cpus=1.0)
    produces, needs, shard_set = ("multi_turn",), ("instructions",), "chains"
    key, config_section, ui_report = "multi_turn", "synthesis.chains", "chains"
    samples = staticmethod(chain_samples)
    summary = classmethod(chain_line)

    @staticmethod
    def expected(counts: dict, task: str) -> int:
        return counts["samples"]

    @property
    def pairs_uri(self) -> str:
        return self.layout.instructed(self.cfg.synthesis.chains.preset)

    def inputs(self) -> list[str]:
        return [self.pairs_uri]

    def settings(self) -> dict:
        s = self.cfg.synthesis
        return {"chains": s.chains.model_dump(exclude={"pair_batch_rows"}), "seed": s.seed, "max_side": s.max_side}

    def _batches(self) -> list[str]:
        if getattr(self, "_batch_cache", None) is None:
            from stages.pairs.instruct import instructed_batches

            if storage.read_marker(self.pairs_uri) is None:
                raise FileNotFoundError(f"multi_turn chains the instructed pairs of preset "
                                        f"'{self.cfg.synthesis.chains.preset}': none under {self.pairs_uri} (add the "
                                        "preset to mining.presets)")
            self._batch_cache = instructed_batches(self.pairs_uri)
        return self._batch_cache

    def item_key(self, k: int) -> list:
        d = self._batches()[k]
        return [d.rstrip("/").rsplit("/", 1)[-1], storage.read_marker(d)]

    def _ranges(self) -> list:
        return self._batches()

    def finalize(self, n: int) -> StageReport:
        rep = super().finalize(n)
        legacy = storage.join(self.out, CHAINS)  # what the one-item stage wrote: its own name, no longer read
        if storage.exists(legacy):
            fs, path = storage.fs_path(legacy)
            fs.rm(path)
        return rep

    def _groups(self, k: int) -> dict[str, list[tuple[str, str, str, str]]]:
        """Instructed pairs of batch k by connected group (the id columns and the instruction only, batch by
        batch)."""
        uri = PairFiles(self._batches()[k]).pairs
        cols = ["pair_id", "source_id", "target_id", "instruction"]
        pairs, index = [], {}
        for batch in storage.parquet_file(uri).iter_batches(batch_size=self.cfg.synthesis.chains.pair_batch_rows,
                                                            columns=cols):
            batch = batch.filter(pc.is_valid(batch.column("instruction")))
            for p, a, b, ins in zip(*(batch.column(c).to_pylist() for c in cols)):
                pairs.append((p, a, b, ins))
                index.setdefault(a, len(index))
                index.setdefault(b, len(index))
        uf = UnionFind(len(index))
        for _, a, b, _ in pairs:
            uf.union(index[a], index[b])
        groups: dict[str, list] = defaultdict(list)
        for p in pairs:
            groups[str(uf.find(index[p[1]]))].append(p)
        return {min(q[0] for q in g): sorted(g) for g in groups.values()}

    def run(self, k: int) -> ItemReport:
        from types import SimpleNamespace

        from stages.corpus.ingest import catalog_uris

        part = self.parts()[k]
        s = self.cfg.synthesis
        groups = self._groups(k)
        needed = {i for g in groups.values() for _, a, b, _ in g for i in (a, b)}
        # the catalog rows of these images only (id -> URI, read in batches), not the whole catalog
        catalog = {i: SimpleNamespace(id=i, uri=u) for i, u in catalog_uris(self.cfg.root, needed).items()}
        gen = json.dumps([[f"instructed-pairs:{s.chains.preset}", "1"], list(CHAIN_TEMPLATER)])
        convs: Counter[str] = Counter()
        pair_fate: Counter[str] = Counter()
        rows: list[dict] = []
        samples = 0
        n_pairs = sum(len(g) for g in groups.values())
        with storage.ParquetSink(storage.join(part, CHAINS), CHAIN_SCHEMA) as sink:
            for gid in sorted(groups):
                rng = np.random.default_rng([s.seed, int(digest(gid, 15), 16)])
                for conv in conversations(groups[gid], s.chains.max_turns, rng):
                    if len(conv) < 2:
                        convs["dropped: single_turn"] += 1
                        pair_fate["single_turn"] += 1
                        continue
                    order = [conv[0][1]] + [p[2] for p in conv]  # every image, in order of appearance
                    loaded = [load_source(catalog[i], self.cfg) if i in catalog else (None, "not_in_catalog")
                              for i in order]
                    bad = next((why for im, why in loaded if im is None), None)
                    if bad is not None:
                        convs[f"dropped: {bad}"] += 1
                        pair_fate[bad] += len(conv)
                        continue
                    pos = {i: n + 1 for n, i in enumerate(order)}
                    turns = [(p[3], pos[p[1]], pos[p[2]]) for p in conv[:-1]] + [(conv[-1][3], pos[conv[-1][1]], None)]
                    key = digest([p[0] for p in conv], 20)
                    edit_at = pos[conv[-1][1]] - 1
                    rows.append({"sample_id": key, "kind": "multi_turn", "source_ids": json.dumps(order),
                                 "inputs": [png(im) for im, _ in loaded[:-1]],
                                 "roles": ["edit" if n == edit_at else "reference" for n in range(len(order) - 1)],
                                 "edit_mask": None, "target_png": png(loaded[-1][0]),
                                 "instructions": json.dumps({"multi_turn": chain_instruction(turns, key, s.seed)}),
                                 "generators": gen,
                                 "scores": json.dumps({"turns": float(len(conv)),
                                                       "branches": float(sum(conv[i][1] != conv[i - 1][2]
                                                                             for i in range(1, len(conv))))}),
                                 "labels": None})
                    convs["packed"] += 1
                    pair_fate["in_conversation"] += len(conv)
                    samples += 1
                    if len(rows) >= 16:  # a few samples' images in memory at a time
                        sink.write(pa.Table.from_pylist(rows, schema=CHAIN_SCHEMA))
                        rows = []
            if rows:
                sink.write(pa.Table.from_pylist(rows, schema=CHAIN_SCHEMA))
            counts = {"pairs": n_pairs, "pair_fate": count_reasons(pair_fate), "conversations": count_reasons(convs),
                      "samples": samples}
            self.reconcile(counts)  # raising here removes the unfinished file
        storage.write_marker(part, {"counts": counts})
        return ItemReport(stage=self.label, item=k, counts=counts)

    def reconcile(self, c: dict) -> None:
        check_sum(self.label, c["pairs"], c["pair_fate"], "instructed pairs")
        check_sum(self.label, c["samples"], c["conversations"].get("packed", 0), "conversations packed")
