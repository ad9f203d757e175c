"""Labelling: the page that takes people's verdicts on mined pairs, and Label Studio's JSON both ways."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, _config, _fail, app, out


@app.command()
def label(pairs: str = typer.Argument(..., help="a preset name (with --root), its pairs/<preset> folder, or a "
                                                "shard set folder"),
          task: str = typer.Option(..., "--task", help="the task the verdicts are about (labels/<task>.parquet)"),
          root: Optional[str] = typer.Option(None, help="run root (default: the one holding PAIRS)"),
          port: int = typer.Option(8765, help="port on 127.0.0.1 (0: any free port)"),
          who: Optional[str] = typer.Option(None, help="labeller's name (default: the login name)"),
          export_label_studio: Optional[Path] = typer.Option(None, "--export-label-studio",
                                                             help="write the pairs as Label Studio tasks, then stop"),
          import_label_studio: Optional[Path] = typer.Option(None, "--import-label-studio",
                                                             help="append a Label Studio export's verdicts, then stop"),
          config: Optional[Path] = ConfigOpt) -> None:
    """Serve a page on 127.0.0.1 showing one pair at a time: a accepts, r rejects, s skips; verdicts are
    appended to <root>/labels/<task>.parquet. Least certain pairs first once the task's classifier exists."""
    from flows.classifier import score_pairs
    from flows.label_page import LabelSession, make_server
    from flows.labels import append_labels, export_label_studio as export_ls, import_label_studio as import_ls
    from flows.labels import load_items, order_items, read_labels
    from schemas.taxonomy import task_spec

    try:
        task_spec(task)
        root_uri, items = load_items(pairs, _config(config, root=root).root if root else None)
        cfg = _config(config, root=root_uri)
        if import_label_studio is not None:
            rows = import_ls(import_label_studio, task)
            total = append_labels(cfg.root, task, rows) if rows else read_labels(cfg.root, task).num_rows
            out.print(f"imported {len(rows)} verdicts from {import_label_studio}: {total} {task} labels under "
                      f"{cfg.root}", markup=False)
            return
        items = [it for it in items if it.task == task] or items
        items = order_items(items, score_pairs(cfg, task, [i.source_id for i in items], [i.target_id for i in items]))
        if export_label_studio is not None:
            n = export_ls(items, read_labels(cfg.root, task), export_label_studio)
            out.print(f"wrote {n} Label Studio tasks to {export_label_studio}", markup=False)
            return
        session = LabelSession(cfg.root, task, items, who or getpass.getuser(), cfg.ingest.max_pixels)
        server = make_server(session, port)
    except (FileNotFoundError, KeyError, ValueError, OSError) as e:
        _fail("label failed:", e, 1)
    state = session.state()["progress"]
    out.print(f"labelling {state['total']} {task} pairs ({state['labelled']} labelled): "
              f"http://127.0.0.1:{server.server_address[1]}/  (Ctrl-C stops)", markup=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    out.print(f"{session.state()['progress']['labelled']} labelled -> {cfg.root}", markup=False)
