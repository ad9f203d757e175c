"""The dataset report of a shard set: one static HTML page (report.html) beside its manifest.

It shows the samples per task, what the supervision gate dropped per task and reason, a histogram of every
quality score per task, a grid of sample thumbnails per task (edit | mask | target, with the instruction),
the models and fallbacks that made the samples with their licences, and the set's size. It reads the marker,
a few columns of the samples table and the thumbnails' names (the thumbnails were made by the packing units),
never the tars. Written at finalize, after the samples table; the page needs no script and no network.
"""

from __future__ import annotations

import html
import math
from collections import Counter

import numpy as np
import pyarrow.compute as pc

from mining.quality import FIELDS, MODEL_FIELDS
from schemas.layout import ShardFiles
from store import storage

GRID = 8  # thumbnails per task on the page
BINS = 20
RANGES = {"siglip_similarity": (-1.0, 1.0), "clip_direction": (-1.0, 1.0)}  # others are shares in [0, 1]
LABELS = {"changed_in_mask": "changed in mask", "changed_out_mask": "changed outside mask",
          "ssim_change": "1 - SSIM", "siglip_similarity": "SigLIP similarity", "clip_direction": "instruction direction"}

# licences of the models a lineage can name, matched on a lower-case part of the name, first match wins. A
# name that matches none is one of this project's algorithms (templates, filters, classical maps): no weights.
LICENCES = (("pair-classifier:none", "none: no pair classifier was applied"),
            ("pair-classifier", "your labels (a classifier trained by `aceforge train-pair-classifier`)"),
            ("artefact-classifier", "your labels (a classifier trained by aceforge)"),
            ("siglip", "Apache-2.0 (timm/ViT-B-16-SigLIP weights)"), ("owlv2", "Apache-2.0 (google/owlv2 and segment-anything weights)"),
            ("sam-", "Apache-2.0 (segment-anything)"), ("lama", "Apache-2.0 (big-lama)"),
            ("mediapipe", "Apache-2.0 (MediaPipe models)"),
            ("depth", "see the depth model's card (Depth Anything V2 Small: Apache-2.0)"),
            ("hed-", "Apache-2.0 (lllyasviel/Annotators ControlNetHED weights)"),
            ("dlib", "Boost Software License (dlib)"), ("face:", "see the face model's card (ArcFace weights)"),
            ("ocr", "Apache-2.0 (PaddleOCR models)"), ("vgg16", "see torchvision's VGG16 weights (ImageNet-trained)"),
            ("chat", "the served model's licence (chat endpoint)"), ("local-vlm", "see the local VLM's card"),
            ("cv2", "Apache-2.0 (OpenCV)"), ("offline", "this project's licence (offline fallback, no weights)"))
ALGORITHM = "this project's licence (an algorithm, no weights)"

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1300px;padding:12px 20px;color:#222}
h1{font-size:20px;margin:4px 0} h2{font-size:17px;margin:22px 0 6px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:14px 0 4px}
table{border-collapse:collapse;margin:4px 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top} th{background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:11px;background:#4a7bd0;vertical-align:middle}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:300px} figure img{width:300px;height:auto;min-height:40px;display:block;background:#eee}
figcaption{font-size:12px;overflow-wrap:anywhere}
.none{color:#888} nav a{margin-right:10px}
"""


def _h(x: object) -> str:
    return html.escape(str(x))


def _histogram_svg(values: np.ndarray, lo: float, hi: float) -> str:
    counts, _ = np.histogram(np.clip(values, lo, hi), bins=BINS, range=(lo, hi))
    top = max(int(counts.max()), 1)
    w = 6
    bars = "".join(f'<rect x="{i * w}" y="{30 - 30 * c / top:.1f}" width="{w - 1}" height="{30 * c / top:.1f}" '
                   f'fill="#4a7bd0"><title>{lo + (hi - lo) * i / BINS:.2f}: {c}</title></rect>'
                   for i, c in enumerate(counts))
    return (f'<svg width="{BINS * w}" height="30" role="img" aria-label="histogram {lo} to {hi}">{bars}</svg>'
            f'<br><small>{lo:g} … {hi:g}; median {float(np.median(values)):.3f}, n {len(values)}</small>')


def _licence(name: str) -> str:
    low = name.lower()
    return next((lic for part, lic in LICENCES if part in low), ALGORITHM)


def _tasks_section(counts: dict[str, int]) -> list[str]:
    top = max(counts.values(), default=1)
    rows = "".join(f'<tr><td>{_h(t)}</td><td class="n">{n}</td><td><span class="bar" style="width:{300 * n / top:.0f}px">'
                   f'</span></td></tr>' for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return ['<h2 id="tasks">Samples per task</h2>', f"<table><tr><th>task</th><th>samples</th><th></th></tr>{rows}</table>"]


def _drops_section(stage: str, sup: dict, marker_upstream: dict | None = None) -> list[str]:
    checked, dropped = sup.get("checked") or {}, sup.get("dropped") or {}
    out = ['<h2 id="drops">Dropped by reason</h2>',
           f"<p>Stage <b>{_h(stage)}</b>, supervision gate {_h(sup.get('checker', '-'))}"
           f"{'' if sup.get('enabled', True) else ' (disabled: nothing checked)'}.</p>",
           "<table><tr><th>task</th><th>checked</th><th>dropped</th><th>by reason</th></tr>"]
    for t in sorted(set(checked) | set(dropped)):
        rs = dropped.get(t, {})
        out.append(f'<tr><td>{_h(t)}</td><td class="n">{checked.get(t, 0)}</td><td class="n">{sum(rs.values())}</td>'
                   f"<td>{_h(', '.join(f'{r} {n}' for r, n in sorted(rs.items())) or '-')}</td></tr>")
    out.append("</table>")
    up = marker_upstream or {}
    if up:
        out += ["<h3>Dropped upstream, by stage and reason</h3>",
                "<table><tr><th>stage output</th><th>dropped</th><th>by reason</th></tr>"]
        for where, rs in sorted(up.items()):
            out.append(f'<tr><td>{_h(where)}</td><td class="n">{sum(rs.values())}</td>'
                       f"<td>{_h(', '.join(f'{r} {n}' for r, n in sorted(rs.items())) or '-')}</td></tr>")
        out.append("</table>")
    return out


def _scores_section(table, tasks: list[str], pair_model: str) -> list[str]:
    out = ['<h2 id="scores">Quality scores per task</h2>',
           "<p>Changed shares: pixels whose largest channel difference exceeds 16, edit against target. "
           + ("SigLIP scores measured." if pair_model == "siglip" else
              "SigLIP similarity and instruction direction: <b>not measured</b> (no SigLIP weights when packed).")
           + "</p>", "<table><tr><th>task</th>" + "".join(f"<th>{_h(LABELS[f])}</th>" for f in FIELDS) + "</tr>"]
    task_col = table.column("task").to_numpy(zero_copy_only=False)
    for t in tasks:
        sel = task_col == t
        if not sel.any():
            out.append(f'<tr><td>{_h(t)}</td><td class="none" colspan="{len(FIELDS)}">no sample kept</td></tr>')
            continue
        cells = []
        for f in FIELDS:
            col = table.column(f).to_numpy(zero_copy_only=False)[sel]
            vals = np.array([v for v in col if v is not None and not (isinstance(v, float) and math.isnan(v))], float)
            if len(vals):
                cells.append(f"<td>{_histogram_svg(vals, *RANGES.get(f, (0.0, 1.0)))}</td>")
            else:
                why = "model absent" if f in MODEL_FIELDS and pair_model != "siglip" else "not measurable"
                cells.append(f'<td class="none">— {why}</td>')
        out.append(f"<tr><td>{_h(t)}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return out


def _grid_section(uri: str, tasks: list[str], counts: dict[str, int]) -> list[str]:
    from store.sample_table import read_samples

    shown = read_samples(uri, ["key", "task", "instruction", "thumb"])
    shown = shown.filter(pc.is_valid(shown.column("thumb"))).to_pylist()
    out = ['<h2 id="grid">Sample grid</h2>', "<p>Each strip: edit (or first input) | mask (group labels stretched "
           "to be seen) | target, with the instruction.</p>"]
    for t in tasks:
        rows = [r for r in shown if r["task"] == t][:GRID]
        out.append(f'<h3 id="task-{_h(t)}">{_h(t)}</h3>')
        if not rows:
            out.append('<p class="none">no sample kept (see the drops above)</p>' if t not in counts else
                       '<p class="none">no thumbnails (the packing units wrote none)</p>')
            continue
        out.append('<div class="grid">' + "".join(
            f'<figure><img loading="lazy" src="{_h(r["thumb"])}" alt="{_h(r["key"])}">'
            f"<figcaption>{_h(r['instruction'])}</figcaption></figure>" for r in rows) + "</div>")
    return out


def _models_section(gens: Counter, pair_model: str) -> list[str]:
    rows = "".join(f'<tr><td>{_h(g)}</td><td class="n">{n}</td><td>{_h(_licence(g))}</td></tr>'
                   for g, n in gens.most_common())
    scorer = ("SigLIP ViT-B-16 (both towers)", "Apache-2.0 (timm/ViT-B-16-SigLIP weights)") if pair_model == "siglip" \
        else ("none (SigLIP weights absent: model scores null)", "-")
    return ['<h2 id="models">Models and fallbacks</h2>',
            f"<table><tr><th>model or algorithm (lineage)</th><th>samples</th><th>licence</th></tr>{rows}"
            f"<tr><td>quality scorer: {_h(scorer[0])}</td><td></td><td>{_h(scorer[1])}</td></tr></table>"]


def _filter_line(f: dict | None) -> list[str]:
    if not f:
        return []
    return [f"<p>Filtered from {_h(f['source'])} by <code>{_h(f['where'])}</code>: kept {f['kept']} of "
            f"{f['source_samples']} samples (the drops below are the source's).</p>"]


def render(uri: str, stage: str = "") -> str:
    """The report page of the complete shard set `uri`."""
    from store.sample_table import read_samples

    marker = storage.read_marker(uri)
    if marker is None:
        raise FileNotFoundError(f"{uri} is not a complete shard set (no {storage.MARKER})")
    table = read_samples(uri, ["task", *FIELDS, "generators"])
    counts = dict(marker.get("counts_by_task") or {})
    sup = marker.get("supervision") or {}
    tasks = sorted(set(counts) | set(sup.get("checked") or {}))  # with the tasks whose samples were all dropped
    pair_model = (marker.get("quality") or {}).get("pair_model", "absent")
    gens: Counter[str] = Counter()
    for g, n in zip(*pc.value_counts(table.column("generators")).flatten()):
        for name in filter(None, (g.as_py() or "").split(",")):
            gens[name] += n.as_py()
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    body = [f"<h1>Shard set {_h(name)}</h1>",
            f"<p>{marker['samples']} samples in {marker['shards']} shards, {marker['bytes'] / 2**20:.1f} MiB; "
            f"{len(counts)} tasks kept of {len(tasks)}; samples table rows {table.num_rows}.</p>", *_filter_line(marker.get("filter")),
            '<nav><a href="#tasks">tasks</a><a href="#drops">drops</a><a href="#scores">scores</a>'
            '<a href="#grid">samples</a><a href="#models">models</a></nav>',
            *_tasks_section(counts), *_drops_section(stage or "pack", sup, marker.get("upstream_drops")),
            *_scores_section(table, tasks, pair_model), *_grid_section(uri, tasks, counts), *_models_section(gens, pair_model)]
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_h(name)}: dataset report</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>")


def write_report(uri: str, stage: str = "") -> str:
    """Write report.html beside the manifest; returns its URI."""
    out = ShardFiles(uri).report
    storage.atomic_write_bytes(out, render(uri, stage).encode("utf-8"))
    return out
