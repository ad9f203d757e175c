"""Mining commands: the mining flow, models, the pair classifier, the effective config and the DAG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

import yaml

from flows.cli.common import ConfigOpt, _config, _config_and_data, _fail, _warn, app, out
from stages.corpus.ingest import reconciliation_line


def _print_flow_mining(summary: dict) -> None:
    from flows.reports import summary_lines

    for line in summary_lines(summary):
        out.print(line)


@app.command()
def mine(source: Optional[str] = typer.Argument(None, help="ingest this first (else use <root>/catalog)"),
         root: Optional[str] = typer.Option(None, help="output root"),
         config: Optional[Path] = ConfigOpt) -> None:
    """The mining flow: (ingest ->) embed -> cluster -> mine pairs -> instructions -> shards."""
    from flows.pipelines import mine_flow

    cfg, extra = _config_and_data(config, root=root)
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


models_app = typer.Typer(help="The models the pipeline can use: list them (no subcommand) or pull them.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, config: Optional[Path] = ConfigOpt) -> None:
    """List every model the pipeline can use, the file it expects, and whether it is present."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = config
        return
    from mining.models.registry import model_status

    cfg = _config(config)
    out.print(f"models directory: {Path(cfg.models_dir).resolve()}  (config models_dir or env ACEFORGE_MODELS)")
    for m in model_status(cfg):
        state = "[green]present[/green]" if m.present else "[yellow]absent[/yellow]"
        out.print(f"\n[bold]{m.name}[/bold]: {state}\n  used for:   {m.purpose}")
        for p in m.files:
            out.print(f"  expects:    {p}")
        out.print(f"  without it: {m.fallback}")


@models_app.command("pull")
def models_pull(ctx: typer.Context,
                names: Optional[list[str]] = typer.Argument(None, help="models to pull (default: those the config "
                                                            "uses; `--list` names them all)"),
                list_: bool = typer.Option(False, "--list", help="list every pullable model, its licence and "
                                           "source, and download nothing"),
                config: Optional[Path] = ConfigOpt) -> None:
    """Download models from their published source (the Hugging Face Hub, HF_ENDPOINT honoured, or the
    authors' URL), showing licence and size first; resumes, verifies the digest, places them in models_dir."""
    from mining.models.mediapipe import fetch as fetch_mediapipe, mediapipe_dir
    from mining.models.pull import catalog, default_names, describe, pull

    if list_:
        for line in describe():
            out.print(line, markup=False)
        out.print("mediapipe: MediaPipe selfie segmentation and BlazePose full (tflite from the mediapipe wheel, "
                  "via pip), licence Apache-2.0", markup=False)
        return
    from flows import settings

    if "HF_HUB_OFFLINE" in settings.SET_HERE:  # the CLI's own default, not the user's: pull is the one fetch
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = False
    cfg = _config(config or ctx.obj)
    want = list(names or default_names(cfg.synthesis.sam_variant) + ["mediapipe"])
    models_dir = Path(cfg.models_dir)
    out.print(f"models directory: {models_dir.resolve()}", markup=False)
    try:
        hub = [n for n in want if n != "mediapipe"]
        if unknown := [n for n in hub if n not in catalog()]:
            raise KeyError(f"unknown model {', '.join(unknown)}; pullable: {', '.join(catalog())}, mediapipe")
        pulled = pull(models_dir, hub, say=lambda s: out.print(s, markup=False))
        if "mediapipe" in want:
            out.print("mediapipe: tflite files from the mediapipe wheel (pip), licence Apache-2.0", markup=False)
            written = fetch_mediapipe(models_dir)
            out.print(f"  {len(written)} file(s) written to {mediapipe_dir(models_dir)}" if written else
                      f"  present: {mediapipe_dir(models_dir)}", markup=False)
    except Exception as e:  # noqa: BLE001 - one line naming the cause
        _fail("pull failed:", e, 1)
    got = sum(p.state == "downloaded" for p in pulled)
    out.print(f"pulled {got} file(s), {len(pulled) - got} already there", markup=False)


@app.command("train-pair-classifier")
def train_pair_classifier_cmd(
        labels: Optional[Path] = typer.Argument(None, help="parquet with source_id, target_id, label (1 = valid "
                                                "pair), or verdicts; default: <root>/labels/<task>.parquet"),
        task: str = typer.Option("general_editing", "--task", help="the task whose Table 4 head this is"),
        out_path: Optional[Path] = typer.Option(None, "--out", help="safetensors to write (default: "
                                                "<models_dir>/pair_classifier/<task>.safetensors, where mining "
                                                "finds it)"),
        root: Optional[str] = typer.Option(None, help="root whose embeddings hold the ids"),
        config: Optional[Path] = ConfigOpt, epochs: int = typer.Option(200)) -> None:
    """Train a task's second-level pair classifier on frozen embeddings of labelled pairs (a quarter of each
    class held out: accuracy and ROC AUC reported and saved in the file's metadata)."""
    from flows.classifier import train_from_labels
    from schemas.taxonomy import task_spec

    cfg = _config(config, root=root)
    try:
        task_spec(task)
        rep = train_from_labels(cfg, labels, out_path, task=task, epochs=epochs)
    except (FileNotFoundError, KeyError, ValueError) as e:
        _fail("training failed:", e, 1)
    out.print(f"trained on {rep['pairs']} pairs ({rep['positives']} positive) from {rep['embedder']}: "
              f"loss {rep['loss']:.4f}, train accuracy {rep['accuracy']:.3f}; held out {rep['heldout_pairs']}: "
              f"accuracy {rep['heldout_accuracy']:.3f}, ROC AUC {rep['heldout_roc_auc']:.3f} -> {rep['out']}",
              markup=False)


@app.command("config")
def show_config(config: Optional[Path] = ConfigOpt) -> None:
    """Print the effective configuration as YAML."""
    out.print(yaml.safe_dump(_config(config).model_dump(mode="json"), sort_keys=False))


@app.command()
def describe(config: Optional[Path] = ConfigOpt,
             source: Optional[str] = typer.Option(None, help="the source a run would ingest first"),
             root: Optional[str] = typer.Option(None, help="output root")) -> None:
    """Print the stages a config enables, in run order: what each needs, its items, resources, outputs, tasks."""
    from flows.pipelines import default_writer
    from stages.registry import Pipeline

    cfg = _config(config, root=root)
    out.print(Pipeline(cfg, source, default_writer(cfg)).describe(), markup=False)
