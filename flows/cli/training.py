"""Training commands: a Ray Train run over shard sets, and inference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli.common import ConfigOpt, _config, _fail, _warn, app, out
from schemas.layout import RunFiles
from store import storage


@app.command()
def train(shard_uris: list[str] = typer.Argument(..., help="one or more complete shard sets (each manifest lists "
                                                          "its shards): one mixture over all of them"),
          root: Optional[str] = typer.Option(None, help="where checkpoints/ and exports go (default from config)"),
          config: Optional[Path] = ConfigOpt,
          steps: Optional[int] = typer.Option(None, help="train.max_steps"),
          workers: Optional[int] = typer.Option(None, help="train.num_workers (Ray Train workers)"),
          run_name: Optional[str] = typer.Option(None, help="train.run_name; unset: named by the shards and "
                                                             "settings (the same resume, new ones start anew)"),
          phase: Optional[int] = typer.Option(None, help="train.phase: 1 (0-ref tasks) or 2 (all tasks)"),
          init_from: Optional[str] = typer.Option(None, help="train.init_from: a checkpoint folder, a run folder "
                                                              "<root>/checkpoints/<run> (its latest checkpoint), or "
                                                              "a kohya/ComfyUI LoRA file (a released ACE++ LoRA)"),
          phases: Optional[str] = typer.Option(None, help="e.g. 1,2: phase 1, then phase 2 from its weights"),
          precompute: bool = typer.Option(False, help="encode latents and text embeddings into side shards first")
          ) -> None:
    """Fine-tune ACE++ (LCU++ on FLUX.1-Fill) on shard sets with Ray Train; checkpoints, resume, exports."""
    from flows.pipelines import train_flow
    from flows.training import check_trainable
    from trainer.runs import resolve_init

    cfg = _config(config, root=root, **{"train.max_steps": steps, "train.num_workers": workers,
                                        "train.run_name": run_name, "train.precompute": precompute or None,
                                        "train.phase": phase, "train.init_from": storage.absolute(init_from)})
    try:
        phase_list = [int(x) for x in phases.split(",")] if phases else None
        if phase_list and any(x not in (1, 2) for x in phase_list):
            raise ValueError(f"--phases takes 1 and 2, got {phases}")
        if cfg.train.init_from:  # before any flow or Ray starts
            resolve_init(cfg.train.init_from, cfg.train)
        check_trainable(cfg.train, shard_uris, phase_list)  # from the manifests: no flow, no Ray
        from flows.preflight import preflight

        preflight(cfg, models=False, warn=_warn)
        res = train_flow(shard_uris=shard_uris, root=cfg.root, config=cfg.model_dump(mode="json"), phases=phase_list)
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
