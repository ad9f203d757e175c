"""The aceforge command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from flows import settings

settings.apply()

import typer  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from flows.progress import progress_bar  # noqa: E402
from schemas.config import ConfigError, RunConfig, load_config  # noqa: E402
from schemas.layout import CatalogFiles, DemoFiles, RunFiles, RunLayout  # noqa: E402
from store import storage  # noqa: E402
from stages.corpus.ingest import (IngestReport, ingest as run_ingest, load_quarantine,  # noqa: E402
                          reconciliation_line)

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
    from mining.pairs.presets import check_presets

    try:
        cfg = load_config(path, overrides={k: v for k, v in overrides.items() if v is not None})
        try:
            check_presets(cfg.mining.presets)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return cfg
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
    cfg = _config(config, root=root, **{"ingest.workers": workers})
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
    import yaml as _yaml

    from flows.demo import demo_flow

    extra = _yaml.safe_load(config.read_text()) if config else None
    _config(config)  # fail early, with the key named, on a bad config file
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


def _print_flow_mining(summary: dict) -> None:
    from flows.reports import summary_lines

    for line in summary_lines(summary):
        out.print(line)


@app.command()
def mine(source: Optional[str] = typer.Argument(None, help="ingest this first (else use <root>/catalog)"),
         root: Optional[str] = typer.Option(None, help="output root"),
         config: Optional[Path] = ConfigOpt) -> None:
    """The mining flow: (ingest ->) embed -> cluster -> mine pairs -> instructions -> shards."""
    import yaml as _yaml

    from flows.pipelines import mine_flow

    cfg = _config(config, root=root)
    extra = _yaml.safe_load(config.read_text()) if config else {}
    try:
        from flows.preflight import preflight

        preflight(cfg, warn=_warn)  # models and storage, before the flow starts
        res = mine_flow(source=source, root=cfg.root, config=extra)
    except Exception as e:  # noqa: BLE001 - one line naming the cause (--debug: the traceback)
        _fail("mine failed:", e, 1)
    if line := reconciliation_line(res.get("ingest"), cfg.root):
        out.print(line, markup=False)
    _print_flow_mining(res)
    if not any("shards" in v for v in res.values() if isinstance(v, dict)):
        out.print("mining.instructions.backend is none: pairs stay in pairs/, unpacked")


@app.command()
def models(config: Optional[Path] = ConfigOpt) -> None:
    """List every model the pipeline can use, the file it expects, and whether it is present."""
    from mining.models.registry import model_status

    cfg = _config(config)
    out.print(f"models directory: {Path(cfg.models_dir).resolve()}  (config models_dir or env ACEFORGE_MODELS)")
    for m in model_status(cfg):
        state = "[green]present[/green]" if m.present else "[yellow]absent[/yellow]"
        out.print(f"\n[bold]{m.name}[/bold]: {state}\n  used for:   {m.purpose}")
        for p in m.files:
            out.print(f"  expects:    {p}")
        out.print(f"  without it: {m.fallback}")


@app.command("train-pair-classifier")
def train_pair_classifier_cmd(
        labels: Path = typer.Argument(..., help="parquet with source_id, target_id, label (1 = valid pair)"),
        out_path: Path = typer.Option(..., "--out", help="safetensors to write (under models_dir to use it)"),
        root: Optional[str] = typer.Option(None, help="root whose embeddings hold the ids"),
        config: Optional[Path] = ConfigOpt, epochs: int = typer.Option(200)) -> None:
    """Train the second-level pair classifier on frozen embeddings of labelled pairs."""
    from flows.classifier import train_from_labels

    cfg = _config(config, root=root)
    try:
        rep = train_from_labels(cfg, labels, out_path, epochs=epochs)
    except (FileNotFoundError, KeyError, ValueError) as e:
        _fail("training failed:", e, 1)
    out.print(f"trained on {rep['pairs']} pairs ({rep['positives']} positive) from {rep['embedder']}: "
              f"loss {rep['loss']:.4f}, train accuracy {rep['accuracy']:.3f} -> {out_path}")


@app.command()
def train(shard_uris: list[str] = typer.Argument(..., help="one or more complete shard sets (each manifest lists "
                                                          "its shards): one mixture over all of them"),
          root: Optional[str] = typer.Option(None, help="where checkpoints/ and exports go (default from config)"),
          config: Optional[Path] = ConfigOpt,
          steps: Optional[int] = typer.Option(None, help="train.max_steps"),
          workers: Optional[int] = typer.Option(None, help="train.num_workers (Ray Train workers)"),
          run_name: Optional[str] = typer.Option(None, help="train.run_name; unset: named by the shards and "
                                                             "settings (the same resume, new ones start anew)"),
          stage: Optional[int] = typer.Option(None, help="train.stage: 1 (0-ref tasks) or 2 (all tasks)"),
          init_from: Optional[str] = typer.Option(None, help="train.init_from: a checkpoint folder, or a run folder "
                                                              "<root>/checkpoints/<run> (its latest checkpoint)"),
          stages: Optional[str] = typer.Option(None, help="e.g. 1,2: stage 1, then stage 2 from its weights"),
          precompute: bool = typer.Option(False, help="encode latents and text embeddings into side shards first")
          ) -> None:
    """Fine-tune ACE++ (LCU++ on FLUX.1-Fill) on shard sets with Ray Train; checkpoints, resume, exports."""
    from flows.pipelines import train_flow
    from flows.training import check_trainable
    from trainer.runs import resolve_init

    cfg = _config(config, root=root, **{"train.max_steps": steps, "train.num_workers": workers,
                                        "train.run_name": run_name, "train.precompute": precompute or None,
                                        "train.stage": stage, "train.init_from": storage.absolute(init_from)})
    try:
        stage_list = [int(x) for x in stages.split(",")] if stages else None
        if stage_list and any(x not in (1, 2) for x in stage_list):
            raise ValueError(f"--stages takes 1 and 2, got {stages}")
        if cfg.train.init_from:  # before any flow or Ray starts
            resolve_init(cfg.train.init_from, cfg.train)
        check_trainable(cfg.train, shard_uris, stage_list)  # from the manifests: no flow, no Ray
        from flows.preflight import preflight

        preflight(cfg, models=False, warn=_warn)
        res = train_flow(shard_uris=shard_uris, root=cfg.root, config=cfg.model_dump(mode="json"), stages=stage_list)
    except Exception as e:  # noqa: BLE001 - one line naming the cause (--debug: the traceback)
        _fail("training failed:", e, 1)
    head = f"run {res['run_name']}: step {res['step']}"
    if res["metrics"]:
        first, last = res["metrics"][0], res["metrics"][-1]
        head += (f"; loss {first['loss']:.4f} (step {first['step']}) -> {last['loss']:.4f} (step {last['step']}); "
                 f"{last['samples_per_s']:.2f} samples/s, {last['tokens_per_s']:.0f} tokens/s")
    out.print(head)
    out.print(f"checkpoint: {res['checkpoint']}\nmetrics:    {RunFiles(res['run_dir']).metrics_log}")
    for kind, path in res["exports"].items():
        out.print(f"export {kind}: {path}")


@app.command()
def infer(image: Optional[Path] = typer.Option(None, help="the edit image; none: a blank canvas (text-to-image, "
                                                           "or generation from --ref)"),
          prompt: str = typer.Option(..., help="the instruction"),
          out_path: Path = typer.Option(..., "--out", help="where to write the result"),
          mask: Optional[Path] = typer.Option(None, help="edit mask (white = generate); none: a global edit"),
          ref: Optional[Path] = typer.Option(None, help="reference image, placed left on the canvas"),
          lora: Optional[Path] = typer.Option(None, help="LoRA: diffusers folder/file or kohya/ComfyUI file"),
          base: Optional[str] = typer.Option(None, help="FLUX.1-Fill-dev folder (default train.base)"),
          root: Optional[str] = typer.Option(None, help="root holding models/ for base 'tiny'"),
          steps: int = typer.Option(28), guidance: float = typer.Option(50.0), seed: int = typer.Option(0),
          task: Optional[str] = typer.Option(None, help="task name: its hint scale (train.repainting_scales, "
                                                        "else the released default)"),
          repainting_scale: Optional[float] = typer.Option(None, help="1: repaint the masked region; < 1: keep a "
                                                                      "hint (default: the task's; without a task "
                                                                      "1 with a mask, 0.5 without)"),
          max_tokens: int = typer.Option(4096, help="canvas budget in 16x16-pixel tokens (released: 4,096)"),
          width: int = typer.Option(1024, help="output width with no edit image"),
          height: int = typer.Option(1024, help="output height with no edit image"),
          config: Optional[Path] = ConfigOpt) -> None:
    """Run FluxFillPipeline + an ACE++ LoRA with the ACE++ canvas preprocessing; write the output image."""
    from PIL import Image

    from trainer.components import load_pipeline
    from trainer.infer import run_infer
    from trainer.ray_job import base_folder

    cfg = _config(config, root=root, **{"train.base": base})
    if image is None and mask is not None:
        _fail("inference failed:", ValueError("--mask needs --image"), 2)
    if repainting_scale is None and task is not None:
        try:
            repainting_scale = cfg.train.repainting_scale(task)
        except ValueError as e:
            _fail("inference failed:", e, 2)
    try:
        pipe = load_pipeline(base_folder(cfg.train, cfg.root))
        result = run_infer(pipe, prompt, Image.open(image) if image else None, Image.open(mask) if mask else None,
                           Image.open(ref) if ref else None, lora, steps=steps, guidance=guidance, seed=seed,
                           repainting_scale=repainting_scale, layout=cfg.train.maskless_layout,
                           max_tokens=max_tokens, size=(width, height),
                           max_sequence_length=min(512, pipe.tokenizer_2.model_max_length))
    except (FileNotFoundError, ValueError) as e:
        _fail("inference failed:", e, 1)
    except AssertionError:
        # diffusers' kohya converter asserts FLUX.1's real layer widths
        out.print(f"[red]inference failed:[/red] {lora} did not convert onto this transformer: diffusers' kohya "
                  f"converter takes FLUX.1's widths only (aceforge's own kohya exports load at any width)")
        raise typer.Exit(1) from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result.save(out_path)
    out.print(f"wrote {out_path} ({result.width}x{result.height})")


@app.command()
def server(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(4200),
           database_url: Optional[str] = typer.Option(None, help="e.g. postgresql+asyncpg://user:pw@host/db; "
                                                                  "default SQLite under PREFECT_HOME")) -> None:
    """Start a local Prefect server with the UI (http://HOST:PORT); point runs at it with PREFECT_API_URL."""
    from flows.deploy import run_server

    out.print(f"Prefect UI and API on http://{host}:{port} (export PREFECT_API_URL=http://{host}:{port}/api)")
    raise typer.Exit(run_server(host, port, database_url))


@app.command()
def deploy(source: Optional[str] = typer.Option(None, help="what the scheduled mining deployment ingests"),
           root: Optional[str] = typer.Option(None, help="output root of both deployments (made absolute)"),
           config: Optional[Path] = ConfigOpt,
           schedule: bool = typer.Option(False, help="activate the mining schedule (inactive by default)"),
           cron: str = typer.Option("0 3 * * *", help="the mining schedule (UTC)"),
           worker: bool = typer.Option(False, help="register on the process work pool and start a worker there "
                                                    "instead of serving from this process"),
           pool: str = typer.Option("aceforge-local", help="work pool of --worker (created if missing)")) -> None:
    """Register the mining (cron) and training (triggered by aceforge.shards.landed) deployments and run them."""
    from flows import deploy as dep

    cfg = _config(config, root=root)
    params = yaml.safe_load(config.read_text()) if config else None
    try:
        dep.require_server()
    except RuntimeError as e:
        _fail("deploy:", e, 2)
    where = f"root {dep.absolute(cfg.root)}, source {dep.absolute(source)}, schedule '{cron}' " + \
        ("active" if schedule else "inactive (prefect deployment schedule resume aceforge-mine/mine <id>)")
    if worker:
        dep.apply_to_pool(source, cfg.root, params, schedule, cron, pool)
        out.print(f"registered aceforge-mine/mine and aceforge-train/train on pool {pool} ({where}); "
                  "starting a process worker; Ctrl-C or SIGTERM stops it")
        raise typer.Exit(dep.run_child(dep.worker_command(pool)))
    out.print(f"serving aceforge-mine/mine and aceforge-train/train (trigger: aceforge.shards.landed) ({where}); "
              "Ctrl-C or SIGTERM stops")
    dep.serve(source, cfg.root, params, schedule, cron)


@app.command()
def undeploy() -> None:
    """Delete both deployments and the automations of their triggers."""
    from flows.deploy import undeploy as run_undeploy

    gone = run_undeploy()
    out.print("deleted: " + (", ".join(gone) if gone else "nothing (no aceforge deployments)"))


@app.command()
def status(limit: int = typer.Option(10, help="how many runs")) -> None:
    """The latest flow runs: state, task runs by state, parameters."""
    import asyncio

    from flows.deploy import latest_runs

    try:
        runs = asyncio.run(latest_runs(limit))
    except Exception as e:  # no server reachable, or an API error: say so plainly
        out.print(f"[red]cannot read runs:[/red] {type(e).__name__}: {e} (is PREFECT_API_URL set to a running server?)")
        raise typer.Exit(1) from None
    for r in runs:  # one line per run: the parameters that say what it worked on
        params = " ".join(f"{k}={v}" for k, v in r["parameters"].items()
                          if k in ("source", "shard_uri", "root", "out") and v)
        tasks = ", ".join(f"{n} {s.lower()}" for s, n in sorted(r["tasks"].items())) or "no task runs"
        out.print(f"{r['start']}  {r['flow']:<18} {r['run']:<24} {r['state']:<10} tasks: {tasks}  {params}")


@app.command("config")
def show_config(config: Optional[Path] = ConfigOpt) -> None:
    """Print the effective configuration as YAML."""
    out.print(yaml.safe_dump(_config(config).model_dump(mode="json"), sort_keys=False))


@app.command()
def describe(config: Optional[Path] = ConfigOpt,
             source: Optional[str] = typer.Option(None, help="the source a run would ingest first"),
             root: Optional[str] = typer.Option(None, help="output root")) -> None:
    """Print the stages a config enables, in run order: what each needs, its units, resources, outputs, tasks."""
    from flows.pipelines import default_writer
    from stages.registry import Pipeline

    cfg = _config(config, root=root)
    out.print(Pipeline(cfg, source, default_writer(cfg)).describe(), markup=False)


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
    """Re-run the supervision checks over a packed set (any set, old ones included): per task, samples checked
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


if __name__ == "__main__":
    app()
