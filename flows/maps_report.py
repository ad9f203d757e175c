"""The maps stage's UI report: one record per map kind (the first of the first part that has it), source,
mask and map side by side with the instruction of each direction: analysis (source -> map) and control
(map -> source); degradation rows are restoration pairs (degraded -> clean under control_degradation)."""

from __future__ import annotations

import json

from prefect.artifacts import create_markdown_artifact

from flows.artifacts import artifact_key, strip, wrap
from store import storage
from stages.synthesis.parts import RECORDS


def maps_report(out_dir: str, title: str, key: str) -> None:
    marker = storage.read_marker(out_dir) or {}
    first: dict[str, dict] = {}
    for name in marker.get("parts") or []:
        for batch in storage.parquet_file(storage.join(out_dir, name, RECORDS)).iter_batches(batch_size=8):
            for r in batch.to_pylist():  # a batch at a time: the flow process never holds a part's images
                first.setdefault(r["kind"].split(":")[0] if r["kind"].startswith("multi") else r["kind"], r)
            if len(first) >= 11:
                break
        if len(first) >= 11:
            break
    counts = marker.get("counts", {})
    lines = [f"## {title}", "", "One record per map kind. Read left to right for analysis (image -> map), right to "
             "left for control (map -> image); a mask other than all-white means the map covers that region only "
             "and every pixel outside it is the source's. Multi-condition: one map per group of segments (the mask "
             "shows the groups).", ""]
    dropped = {k: v for k, v in counts.get("dropped", {}).items() if v}
    if dropped:
        lines += [f"Dropped by reason: {json.dumps(dropped)}", ""]
    if not first:
        create_markdown_artifact("\n".join(lines + ["No samples."]), key=artifact_key(key), description=title)
        return
    lines += ["| source, mask, map | kind; instructions; made by |", "|---|---|"]
    for kind, r in sorted(first.items()):
        src, cond = (r["target_png"], r["edit_png"]) if kind == "multi" else (r["edit_png"], r["target_png"])
        ins = "<br>".join(wrap(f"{t}: {v}") for t, v in json.loads(r["instructions"]).items())
        gens = ", ".join(f"{a}:{b}" for a, b in json.loads(r["generators"]))
        lines.append(f"| ![source, mask, map]({strip(src, r['mask_png'], cond)}) | **{wrap(r['kind'])}**<br>{ins}"
                     f"<br>{wrap(gens)} |")
    create_markdown_artifact("\n".join(lines), key=artifact_key(key), description=title)
