"""What a run shows in the Prefect UI: count tables, a pair report with thumbnails side by side,
band-similarity histograms, and training metrics."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from mining.image.decode import decode_image
from schemas.layout import PairFiles
from schemas.records import ImageRecord, PairRecord
from store import storage
from store.sources import read_uri

THUMB = 160


def artifact_key(text: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    return "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower()).strip("-")[:100]


def counts_table(title: str, rows: dict[str, object], key: str) -> None:
    create_table_artifact([{"count": k, "value": v} for k, v in rows.items()], key=artifact_key(key), description=title)


def report_link(name: str, report_uri: str, key: str) -> None:
    """A link to a shard set's dataset report (report.html beside its manifest)."""
    uri = storage.absolute(report_uri) or report_uri
    create_link_artifact(uri if "://" in uri else f"file://{uri}", link_text=f"dataset report: {name}",
                         key=artifact_key(key), description=f"dataset report of shard set {name}")


def thumbnail(rec: ImageRecord) -> str:
    """A small JPEG of a catalogued image, inline as a data URI."""
    im = decode_image(read_uri(rec.uri), max_pixels=10**9, min_side=1).image
    im.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# a row (strip + text) stays inside the UI's artifact pane: 794 px wide in a 1366 px window (measured in Chromium)
STRIP_SIDE = 72  # px, the height of one picture of a UI row's strip; a picture is at most 1.5x as wide
WRAP = 44  # characters per line of a UI cell's text: long tokens (file names, scores) are cut here, not by the pane


def wrap(text: str, width: int = WRAP) -> str:
    """Text for a markdown table cell: escaped pipes, lines of at most `width` characters joined by <br>."""
    import textwrap

    return "<br>".join(textwrap.wrap(str(text).replace("|", "\\|"), width, break_long_words=True)) or "-"


def _picture(data: bytes) -> Image.Image:
    """One panel of a strip: RGB, or a mask made visible (group labels 1, 2... stretched to 0-255)."""
    from mining.quality import visible_mask

    im = Image.open(io.BytesIO(data))
    if im.mode in ("L", "P", "I", "I;16"):
        im = Image.fromarray(visible_mask(np.asarray(im.convert("L"))))
    return im.convert("RGB")


def strip(*images: bytes | Image.Image) -> str:
    """Pictures side by side, each STRIP_SIDE px high, as one inline JPEG (one table column for all of them)."""
    panels = []
    for x in images:
        im = x.convert("RGB") if isinstance(x, Image.Image) else _picture(x)
        w = min(3 * STRIP_SIDE // 2, max(1, round(im.width * STRIP_SIDE / im.height)))
        panels.append(im.resize((w, STRIP_SIDE), Image.Resampling.BILINEAR))
    out = Image.new("RGB", (sum(p.width for p in panels) + 3 * (len(panels) - 1), STRIP_SIDE), (255, 255, 255))
    x0 = 0
    for p in panels:
        out.paste(p, (x0, 0))
        x0 += p.width + 3
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _catalog_image(rec: ImageRecord) -> Image.Image:
    im = decode_image(read_uri(rec.uri), max_pixels=10**9, min_side=1).image
    im.thumbnail((3 * STRIP_SIDE // 2, STRIP_SIDE), Image.Resampling.LANCZOS)
    return im


def pair_report(pairs: list[PairRecord], catalog: dict[str, ImageRecord], title: str, key: str, n: int = 12,
                seed: int = 0) -> None:
    """Sampled pairs: source and target thumbnails side by side, instruction, scores, lineage."""
    if not pairs:
        create_markdown_artifact(f"## {title}\n\nNo pairs.", key=artifact_key(key), description=title)
        return
    rng = np.random.default_rng(seed)
    with_ins = [i for i, p in enumerate(pairs) if p.instruction]
    without = [i for i, p in enumerate(pairs) if not p.instruction]
    take = min(len(with_ins), max(n - len(without), (n + 1) // 2))  # packed pairs first, then the others
    pick = sorted(rng.choice(with_ins, take, replace=False).tolist()
                  + rng.choice(without, min(len(without), n - take), replace=False).tolist())
    lines = [f"## {title}", "", f"{len(pick)} of {len(pairs)} pairs ({len(with_ins)} with an instruction, packed), "
             f"sampled with seed {seed}.", "",
             "| source, target | instruction; scores; made by |", "|---|---|"]
    for i in pick:
        p = pairs[i]
        src, tgt = catalog[p.source_id], catalog[p.target_id]
        scores = ", ".join(f"{k} {v:.3f}" for k, v in p.scores.items())
        gens = ", ".join(g.name for g in p.lineage.generators)
        instruction = wrap(p.instruction) if p.instruction else "*(none: not packed)*"
        lines.append(f"| ![source, target]({strip(_catalog_image(src), _catalog_image(tgt))}) | {instruction}"
                     f"<br>*{wrap(scores)}*<br>{wrap(gens)} |")
    create_markdown_artifact("\n".join(lines), key=artifact_key(key), description=title)


def band_histogram(pairs_dir: str, band: tuple[float, float], title: str, key: str, bins: int = 20) -> None:
    """Histogram of the stored in-band edge scores, as a text bar chart (the edges are what the band kept)."""
    lo, hi = band
    counts, cuts = np.zeros(bins, np.int64), np.linspace(lo, hi, bins + 1)
    n = 0  # the score column read a batch at a time: the flow process holds no corpus-sized table
    for batch in storage.parquet_file(PairFiles(pairs_dir).table("edges")).iter_batches(columns=["score"]):
        scores = np.asarray(batch.column(0).to_numpy(zero_copy_only=False), np.float64)
        counts += np.histogram(scores, bins=bins, range=(lo, hi))[0]
        n += len(scores)
    top = max(1, counts.max(initial=0))
    rows = [f"{cuts[i]:.3f}-{cuts[i + 1]:.3f} | {'#' * int(round(40 * c / top)):<40} {c}" for i, c in enumerate(counts)]
    md = (f"## {title}\n\n{n} edges with {lo} <= cosine <= {hi}\n\n```\n" + "\n".join(rows) + "\n```")
    create_markdown_artifact(md, key=artifact_key(key), description=title)


def training_summary(metrics: list[dict], title: str, key: str) -> None:
    """The metrics of every logged step; with a held-out split, also the eval loss per task per checkpoint
    (`<key>-eval`, the table the live view kept up to date during the run)."""
    keep = ("step", "loss", "l_ref", "l_tar", "lr", "samples_per_s", "tokens_per_s", "gpu_mem_gb")
    table = [{k: (round(m[k], 5) if isinstance(m.get(k), float) else m.get(k)) for k in keep if k in m}
             for m in metrics]
    create_table_artifact(table, key=artifact_key(key), description=title)
    evals = [{"step": m["step"], "loss": m["eval_loss"]} for m in metrics if m.get("eval_loss")]
    if evals:
        from flows.live import eval_rows

        create_table_artifact(eval_rows(evals), key=artifact_key(f"{key}-eval"),
                              description=f"{title}: held-out loss per task at each checkpoint")


def synth_report(records: list[dict], title: str, key: str, n: int = 8, seed: int = 0) -> None:
    """Sampled synthesis records: edit image (the source, for a removal), mask and target thumbnails side
    by side, the instructions, scores and generators."""
    if not records:
        create_markdown_artifact(f"## {title}\n\nNo samples.", key=artifact_key(key), description=title)
        return
    import json

    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(records), min(n, len(records)), replace=False).tolist())
    lines = [f"## {title}", "", f"{len(pick)} of the first {len(records)} records of the first part, sampled with "
             f"seed {seed}. An object record is a removal (edit = source, target = object removed); its addition "
             "sample is the reverse.", "", "| edit, mask, target | instructions; scores; made by |", "|---|---|"]
    for i in pick:
        r = records[i]
        ins = "<br>".join(wrap(f"{t}: {v}") for t, v in json.loads(r["instructions"]).items())
        scores = ", ".join(f"{k} {v:.3f}" for k, v in json.loads(r["scores"]).items())
        gens = ", ".join(f"{a}:{b}" for a, b in json.loads(r["generators"]))
        shown = [k for k in ("edit", "mask", "target") if r.get(f"{k}_png")]  # a caption has no edit, no mask
        lines.append(f"| ![{', '.join(shown)}]({strip(*(r[f'{k}_png'] for k in shown))}) | {ins}"
                     f"<br>*{wrap(scores)}*<br>{wrap(gens)} |")
    create_markdown_artifact("\n".join(lines), key=artifact_key(key), description=title)
