"""Shard-set commands: inspect, verify, audit, and the ACE++ training-list export."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rich.table import Table

from flows.cli.common import ConfigOpt, _config, _fail, out, shards_app
from flows.progress import progress_bar


@shards_app.command("inspect")
def shards_inspect(uri: str) -> None:
    """Print a shard set's manifest."""
    from store.shards import read_manifest

    t = Table(title=uri)
    for c in ("shard", "samples", "bytes", "sha256", "tasks"):
        t.add_column(c)
    try:
        rows = read_manifest(uri)
    except FileNotFoundError as e:
        out.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    for r in rows:
        t.add_row(r.shard, str(r.samples), str(r.bytes), r.sha256[:12], str(r.counts_by_task))
    out.print(t)


@shards_app.command("verify")
def shards_verify(uri: str) -> None:
    """Check every shard's checksum, parse every sample and decode every image and mask."""
    from store.shard_reader import verify_shard_set
    from store.shards import read_manifest

    try:
        expected = sum(r.samples for r in read_manifest(uri))
    except FileNotFoundError as e:
        _fail("verify failed:", e, 1)
    with progress_bar("verify", total=expected) as (_, advance):
        rep = verify_shard_set(uri, progress=advance)
    for where, why in rep.bad:
        out.print(f"[red]bad[/red] {where}: {why}")
    out.print(f"{rep.samples}/{rep.expected} samples intact" + ("" if rep.ok else " [red]FAILED[/red]"))
    raise typer.Exit(0 if rep.ok else 1)


@shards_app.command("audit")
def shards_audit(uri: str, config: Optional[Path] = ConfigOpt,
                 show: int = typer.Option(10, help="failing samples listed (key, task, reason, scores)"),
                 limit: Optional[int] = typer.Option(None, help="check only the first N samples")) -> None:
    """Re-run the supervision checks over a packed shard set (any shard set, old ones included): per task, samples checked
    and failing by reason. Exit 1 when any sample fails."""
    from store.shard_reader import ShardReadError, read_shard_set
    from store.shards import read_manifest
    from stages.supervise import audit

    cfg = _config(config).supervision
    try:
        expected = sum(r.samples for r in read_manifest(uri))
    except FileNotFoundError as e:
        _fail("audit failed:", e, 1)
    failures: list = []
    with progress_bar("audit", total=min(expected, limit or expected)) as (_, advance):
        def counted():
            for s in read_shard_set(uri):
                yield s
                advance(1)
        try:
            tally = audit(counted(), cfg, failures, limit=limit, keep=show)
        except ShardReadError as e:
            _fail("audit failed:", e, 1)
    t = Table(title=f"supervision audit: {uri}")
    for c in ("task", "checked", "failing", "by reason"):
        t.add_column(c)
    for task, n in sorted(tally.checked.items()):
        bad = tally.failed.get(task, {})
        t.add_row(task, str(n), str(sum(bad.values())), ", ".join(f"{r} {k}" for r, k in sorted(bad.items())) or "-")
    out.print(t)
    for key, task, why, scores in failures[:show]:
        out.print(f"[red]{why}[/red] {task} {key} {scores}")
    n_bad = tally.n_failed
    out.print(f"{sum(tally.checked.values())} samples checked, {n_bad} failing" + (" [red]FAILED[/red]" if n_bad else ""))
    raise typer.Exit(1 if n_bad else 0)


@shards_app.command("export-ace")
def shards_export_ace(uri: str, out_dir: Path,
                      relative: bool = typer.Option(False, help="paths relative to OUT_DIR (then set the "
                                                                "config's PATH_PREFIX to it); default absolute")
                      ) -> None:
    """Export a shard set to the official ACE++ training list (`#;#`-joined) with images beside it."""
    from store.export_ace import export_ace_plus

    from store.shard_reader import ShardReadError

    try:
        rep = export_ace_plus(uri, out_dir, relative=relative)
    except (ShardReadError, FileNotFoundError, ValueError) as e:
        _fail("export failed:", e, 1)
    out.print(f"{rep.written} samples -> {rep.list_path}; skipped {rep.skipped or 'none'}")
    out.print(f'paths relative to {rep.path_prefix}: set TRAIN_DATA.PATH_PREFIX: "{rep.path_prefix}"' if relative
              else 'absolute paths: the released config\'s PATH_PREFIX: "" reads them as shipped')


@shards_app.command("filter")
def shards_filter(uri: str, out_uri: str,
                  where: str = typer.Option(..., "--where", help="expression over the samples table's columns, "
                                            "e.g. \"task == 'inpainting' and ssim_change > 0.05\"")) -> None:
    """Write the samples of a shard set that EXPR keeps as a new shard set (manifest, samples table, report)."""
    from store.shard_filter import filter_shard_set
    from store.where import WhereError

    try:
        rep = filter_shard_set(uri, out_uri, where)
    except (WhereError, FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        _fail("filter failed:", e, 1)
    out.print(f"{rep.kept}/{rep.total} samples -> {rep.uri} ({rep.shards} shards)")


@shards_app.command("report")
def shards_report(uri: str) -> None:
    """Write (again) a shard set's dataset report, report.html beside its manifest."""
    from store.set_report import write_report

    try:
        path = write_report(uri)
    except FileNotFoundError as e:
        _fail("report failed:", e, 1)
    out.print(f"report: {storage_absolute(path)}")


def storage_absolute(uri: str) -> str:
    from store import storage

    return storage.absolute(uri) or uri


@shards_app.command("leakage")
def shards_leakage(eval_source: str, sets: list[str], config: Optional[Path] = ConfigOpt,
                   report: Optional[Path] = typer.Option(None, "--report", help="the report file (JSON); default: "
                                                         "the run root's leakage/<digest>.json"),
                   show: int = typer.Option(10, help="leaked samples listed")) -> None:
    """Find the training samples of SET... whose inputs or target are an evaluation image: the same pixels
    (exact), a duplicate or an in-band near-duplicate (flips and rescales included). Exit 1 when any is found."""
    from mining.models.embedders import make_embedder
    from store.leakage import check_leakage, leakage_report_uri, write_leakage_report

    cfg = _config(config)
    try:
        embed = make_embedder(cfg.mining.embedder, cfg.models_dir)
        embed.setup()
        rep = check_leakage(eval_source, sets, embed)
    except (FileNotFoundError, ValueError) as e:
        _fail("leakage check failed:", e, 1)
    report = report or Path(leakage_report_uri(cfg.root, eval_source, sets))
    write_leakage_report(rep, str(report))
    t = Table(title=f"leakage of {eval_source} ({rep.eval_images} images, {rep.embedder}, band {rep.band})")
    for c in ("shard set", "images checked", "exact", "duplicate", "near"):
        t.add_column(c)
    counts = rep.counts()
    for s, n in rep.checked.items():
        t.add_row(s, str(n), *(str(counts.get(s, {}).get(level, 0)) for level in ("exact", "duplicate", "near")))
    out.print(t)
    for r in rep.leaked[:show]:
        out.print(f"[red]{r['level']}[/red] {r['key']} {r['member']} ~ {r['eval_image']} ({r['similarity']})")
    out.print(f"{len({(r['set'], r['key']) for r in rep.leaked})} samples leak; report: {report}")
    raise typer.Exit(1 if rep.leaked else 0)
