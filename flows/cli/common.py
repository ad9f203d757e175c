"""What every command shares: the app, one-line failures, the config (the YAML read once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from flows import settings

settings.apply()

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from schemas.config import ConfigError, RunConfig, load_config, read_config_file  # noqa: E402
from schemas.layout import CatalogFiles, RunLayout  # noqa: E402
from stages.corpus.ingest import IngestReport, load_quarantine  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Mine instruction-editing pairs (ACE) into WebDataset shards and fine-tune ACE++.")
shards_app = typer.Typer(no_args_is_help=True, help="Inspect, verify and export shard sets.")
app.add_typer(shards_app, name="shards")
out = Console(soft_wrap=True)  # one line per listed file: greppable

DEBUG = {"on": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="print the full traceback of a failure")) -> None:
    DEBUG["on"] = debug
    from runtime.lifeline import guard

    guard()  # what this command starts (Prefect's temporary server, a local Ray) goes with it, even on kill -9


def _fail(what: str, e: BaseException, code: int) -> None:
    """End a command in one line naming what failed (the traceback too with --debug), exit `code`."""
    from rich.markup import escape

    from flows.preflight import one_line  # the root cause under Ray / Prefect wrappers, one line

    if DEBUG["on"]:
        out.print_exception()
    out.print(f"[red]{what}[/red] {escape(one_line(e))}")
    raise typer.Exit(code) from None


def _warn(message: str) -> None:
    out.print(f"warning: {message}", markup=False, style="yellow")


ConfigOpt = typer.Option(None, "--config", "-c", help="YAML run config; defaults apply to keys it leaves out")


def _config(path: Optional[Path], **overrides) -> RunConfig:
    return _config_and_data(path, **overrides)[0]


def _config_and_data(path: Optional[Path], **overrides) -> tuple[RunConfig, dict[str, Any]]:
    """The effective config and the file's own keys (what a flow takes as its `config` parameter), from one read
    of the YAML."""
    from mining.pairs.presets import check_presets

    try:
        data = read_config_file(path) if path is not None else {}
        cfg = load_config(None, overrides={k: v for k, v in overrides.items() if v is not None}, data=data,
                          origin=str(path) if path is not None else "defaults")
        try:
            check_presets(cfg.mining.presets)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return cfg, data
    except ConfigError as e:
        out.print(f"[red]config error[/red]\n{e}")
        raise typer.Exit(2) from None


def _print_ingest(report: IngestReport, root: str, list_bad: int) -> None:
    t = Table(title=f"ingest -> {report.catalog_uri}")
    t.add_column("count")
    t.add_column("n", justify="right")
    t.add_row("seen", str(report.seen))
    t.add_row("accepted", str(report.accepted))
    t.add_row("duplicates", str(report.duplicates))
    for reason, n in sorted(report.quarantined.items()):
        t.add_row(f"quarantined: {reason}", str(n))
    for reason, n in sorted(report.skipped.items()):
        t.add_row(f"not read: {reason}", str(n))
    out.print(t)
    out.print(report.reconciliation(), markup=False)
    bad = load_quarantine(root)
    for q in bad[:list_bad]:
        out.print(f"  [yellow]{q.reason.value:>16}[/yellow]  {q.uri}  ({q.detail})")
    if len(bad) > list_bad:
        out.print(f"  ... {len(bad) - list_bad} more in {CatalogFiles(RunLayout(root).catalog).quarantine}")
