"""Corpus commands: the demo corpus, ingest, and the demo flow."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, _config_and_data, _fail, _print_ingest, _warn, app, out
from flows.progress import progress_bar
from schemas.layout import DemoFiles, RunLayout
from stages.corpus.ingest import IngestReport
from stages.corpus.ingest import ingest as run_ingest


@app.command("demo-corpus")
def demo_corpus(directory: Path = typer.Argument(..., help="folder to (re)create"),
                seed: int = typer.Option(0, help="seed of the transformation parameters")) -> None:
    """Build the offline demo corpus: real photos, known transformations, odd and bad files."""
    from schemas.config import DemoConfig
    from stages.corpus.demo_corpus import build_demo_corpus

    gt = build_demo_corpus(directory, DemoConfig(seed=seed))
    n_fam = len(gt["families"])
    out.print(f"demo corpus: {len(gt['expected'])} files, {n_fam} families -> {directory}"
              f" (ground truth: {directory / DemoFiles.GROUND_TRUTH})")


@app.command()
def ingest(source: str = typer.Argument(..., help="folder, glob, .txt/.parquet URI list, or .tar; any fsspec URI"),
           root: Optional[str] = typer.Option(None, help="output root (default from config)"),
           config: Optional[Path] = ConfigOpt,
           workers: Optional[int] = typer.Option(None, help="decode processes (0 = one per core)"),
           force: bool = typer.Option(False, help="replace an existing catalog"),
           list_bad: int = typer.Option(50, help="quarantined files to list")) -> None:
    """Ingest images into <root>/catalog: quarantine bad inputs with a reason, drop exact duplicates."""
    cfg, _ = _config_and_data(config, root=root, **{"ingest.workers": workers})
    try:
        from flows.preflight import preflight
        from runtime.lock import RootLock

        preflight(cfg, models=False, warn=_warn)  # the root is writable, before any work
        with RootLock(cfg.root, f"aceforge ingest {source}"), progress_bar("ingest") as (total, advance):
            report = run_ingest(source, cfg.root, cfg.ingest, force=force, progress_total=total, progress=advance)
    except Exception as e:  # noqa: BLE001 - one line naming the cause (--debug: the traceback)
        _fail("ingest failed:", e, 1)
    if report.skipped_existing:
        out.print("catalog already complete for this source and config: nothing to do (--force to redo)")
    _print_ingest(report, cfg.root, list_bad)


@app.command()
def demo(out_dir: Path = typer.Option(Path("demo_out"), "--out", help="where everything lands"),
         config: Optional[Path] = ConfigOpt,
         train: bool = typer.Option(True, help="end with a few training steps of the toy model")) -> None:
    """Run the demo flow (the whole pipeline on the embedded demo corpus) and print where everything landed."""
    from flows.cli.mining import _print_flow_mining
    from flows.demo import demo_flow

    _, extra = _config_and_data(config)  # fails early, with the key named, on a bad config file
    extra = extra or None
    res = demo_flow(out=str(out_dir), config=extra, train=train)
    root = DemoFiles(str(out_dir.resolve())).root if not extra or "root" not in extra else extra["root"]
    ing = res["mined"]["ingest"]
    report = IngestReport(ing["catalog_uri"], ing["seen"], ing["accepted"], ing["duplicates"], ing["quarantined"])
    _print_ingest(report, root, list_bad=50)
    _print_flow_mining(res["mined"])
    r = res["recovery"]
    out.print(f"demo families recovered as sets: {r['recovered']}/{r['families']} "
              f"(sets mixing families: {r['impure_sets']})")
    if train:
        t = res["training"]
        m = t["metrics"]
        out.print(f"training (toy base, Ray Train): step {t['step']}, loss {m[0]['loss']:.4f} -> {m[-1]['loss']:.4f}; "
                  f"checkpoint {t['checkpoint']}")
        for kind, path in t["exports"].items():
            out.print(f"export {kind}: {path}")
    out.print(f"corpus:    {res['corpus']}\ncatalog:   {RunLayout(root).catalog}")
