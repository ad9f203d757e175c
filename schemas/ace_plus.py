"""The released ACE++ weight files (ali-vilab/ACE_plus), as their authors name and publish them: data for
`aceforge models pull` and for `train.init_from` (trainer/released.py maps a released LoRA onto a run)."""

from __future__ import annotations

from dataclasses import dataclass

ACE_PLUS_DIR = "ace_plus"  # under models_dir: the released files keep their repository paths below it


@dataclass(frozen=True)
class ReleasedFile:
    """One published ACE++ weight file, as its authors name it (data for a model fetcher; nothing here
    downloads). Source: the ali-vilab/ACE_plus README (commit f3e410b8, 2025-04-21), its scepter paths
    `hf://ali-vilab/ACE_Plus@<path>` and `ms://iic/ACE_Plus@<path>`."""

    name: str
    path: str  # inside the model repositories below
    kind: str  # "lora" (kohya / ComfyUI keys: init_from) or "full" (BFL keys, 448 input channels)
    rank: int | None
    in_channels: int  # the base layout it belongs to
    sha256: str | None = None  # None: no published digest was read here; pin it from the Hub's file page
    hf_repo: str = "ali-vilab/ACE_Plus"
    modelscope_repo: str = "iic/ACE_Plus"
    licence: str = ("no licence file in ali-vilab/ACE_plus; its README: \"ACE++ is a post-training model based on "
                    "the FLUX.1-dev series from black-forest-labs. Please adhere to its open-source license.\"")


RELEASED_ACE_PLUS: tuple[ReleasedFile, ...] = (
    ReleasedFile("ace-plus-subject-lora", "subject/comfyui_subject_lora16.safetensors", "lora", 16, 384),
    ReleasedFile("ace-plus-portrait-lora", "portrait/comfyui_portrait_lora64.safetensors", "lora", 64, 384),
    ReleasedFile("ace-plus-local-editing-lora", "local_editing/comfyui_local_lora16.safetensors", "lora", 16, 384),
    # the README's spelling (ACE_PLUS_FFT_MODEL), double extension included
    ReleasedFile("ace-plus-fft", "ace_plus_fft.safetensors.safetensors", "full", None, 448),
)
