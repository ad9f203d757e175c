"""Typed configuration: one model per component, defaults documented, loaded from YAML.

An unknown key is an error that names the key and the keys allowed at that place.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.layout import DemoFiles
from schemas.taxonomy import TASKS as _TASKS
from schemas.taxonomy import Family as _Family


class ConfigError(ValueError):
    pass


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IngestConfig(_Config):
    max_pixels: int = Field(80_000_000, gt=0, description="pixel cap; larger images are quarantined as too_large")
    min_side: int = Field(64, ge=1, description="shorter side below this is quarantined as too_small")
    max_bytes: int = Field(200 * 2**20, gt=0, description="file size cap; larger files are quarantined")
    workers: int = Field(0, ge=0, description="decode processes; 0 = one per core")
    chunk_size: int = Field(16, ge=1, description="files per unit of parallel work inside a partition")
    partition_files: int = Field(10_000, ge=1, description="files per ingest partition (one task each)")
    extensions: list[str] | None = Field(
        None, description="file endings that count as images when listing folders and tars; None: every format "
                          "the installed Pillow decodes (avif, jpeg2000, tga, ...); what is not listed is counted "
                          "as skipped, with its ending")
    follow_symlinks_outside: bool = Field(
        False, description="read links in a folder or glob source that lead outside it; off: such a link is "
                           "quarantined as symlink_outside_source, unread (links within the source are followed)")

    def resolved_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)


class ShardConfig(_Config):
    maxcount: int = Field(1000, ge=1, description="samples per shard at most")
    maxsize: int = Field(1 << 30, ge=1 << 10, description="bytes per shard at most (before the tar closes)")
    prefix: str = Field("shard", pattern=r"^[A-Za-z0-9_-]+$", description="shard file names: <prefix>-000000.tar")
    image_ext: str = Field("auto", pattern="^(auto|png|jpg|webp)$", description="the one extension of every image "
                           "field in a set (masks are always png; synthesized sets always png); auto: the format "
                           "of the set's first image. An image stored otherwise is re-encoded: as png losslessly, "
                           "as jpg / webp at jpeg_quality (lossy). A JPEG photo corpus stays JPEG, its bytes kept; "
                           "png keeps every pixel of every source (~8x larger shards for photos)")
    jpeg_quality: int = Field(95, ge=1, le=100, description="quality of images re-encoded as jpg or webp")


class DemoConfig(_Config):
    seed: int = Field(0, description="seed for transformation parameters")
    max_side: int = Field(384, ge=64, description="demo photos are resized so their longer side is at most this")
    variants: list[str] = Field(
        default_factory=lambda: ["crop", "hflip", "color", "recompress", "rotate", "brighten"],
        description="known transformations applied to every base photo",
    )
    text_photos: bool = Field(True, description="add photos with a sign or caption (English, Chinese) for "
                              "the text-removal synthesis")
    style_family: bool = Field(False, description="add a style family (several photos through one classical "
                               "stylisation) for the style pairs")


class InstructionConfig(_Config):
    backend: str = Field("template", pattern="^(none|template|chat)$",
                         description="template: a generic phrasing per task (lineage: template:1), so shards land "
                                     "without an endpoint; chat: an OpenAI-compatible endpoint serving a "
                                     "vision-language model; none: pairs stay unpacked in pairs/")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="chat endpoint root (.../v1)")
    model: str = Field("", description="model name the endpoint serves")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key, if any")
    timeout_s: float = Field(60.0, gt=0, description="per socket operation (connect, each read)")
    retries: int = Field(3, ge=0, description="retries on 5xx, 429, timeouts and connection errors")
    deadline_s: float = Field(90.0, gt=0, description="per instruction, retries included: the call is abandoned "
                              "(its connection closed) and the template kept once this is spent")
    breaker_failures: int = Field(5, ge=1, description="after this many failed calls in a row the endpoint is "
                                  "not called again in the stage's unit (templates instead, counted)")
    max_instruction_chars: int = Field(500, ge=1, description="a reply whose instruction or caption is longer "
                                       "is refused (template instead, counted as chat_too_long), not cut")


class MiningConfig(_Config):
    embedder: str = Field("auto", pattern="^(auto|siglip|offline)$",
                          description="auto: SigLIP when its weights are in models_dir, else the offline fallback")
    batch_size: int = Field(32, ge=1, description="images per embedder call")
    partition_size: int = Field(4096, ge=1, description="images per embedding partition file")
    k: int | None = Field(None, ge=1, description="K-means clusters; None: n/50, between 1 and 10,000")
    max_cluster_size: int = Field(100_000, ge=2, description="clusters above this are split again")
    kmeans_niter: int = Field(20, ge=1, description="K-means iterations")
    recluster_drift: float = Field(0.05, ge=0, le=2, description="new images are assigned to the existing "
                                   "centroids unless their mean cosine to them is this far below the fit's")
    recluster_growth: float = Field(1.0, ge=0, description="re-cluster once the corpus has grown by this "
                                    "fraction since the last fit (1.0: doubled)")
    seed: int = Field(0, description="seeds K-means and per-set pair sampling")
    band_lo: float | None = Field(None, ge=0, le=1, description="None: the embedder's calibrated band (SigLIP 0.85)")
    band_hi: float | None = Field(None, ge=0, le=1, description="None: the embedder's calibrated band (SigLIP 0.98)")
    block: int = Field(4096, ge=16, description="rows per similarity block; memory ~ block^2 * 4 bytes")
    max_pairs_per_set: int = Field(64, ge=1, description="cap on pairs emitted per union-find set")
    clusters_per_batch: int = Field(256, ge=1, description="clusters per unit of mining work (one task each)")
    presets: list[str] = Field(default_factory=lambda: ["general_editing"], description="task presets to mine")
    pair_classifier: str | None = Field(None, description="safetensors under models_dir; None: pass-through")
    geometric_check: bool = Field(True, description="confirm series / reference group members and general-editing "
                                  "pairs show one subject by keypoint matching (supervision.group_min_inliers); "
                                  "embeddings that tell subjects apart (SigLIP) may switch it off")
    instructions: InstructionConfig = Field(default_factory=InstructionConfig)

    @model_validator(mode="after")
    def _band_in_order(self) -> "MiningConfig":
        if self.band_lo is not None and self.band_hi is not None and self.band_lo > self.band_hi:
            raise ValueError(f"band_lo {self.band_lo} is above band_hi {self.band_hi}")
        return self


class TrainConfig(_Config):
    base: str = Field("tiny", description="diffusers FLUX.1-Fill-dev folder (safetensors), or 'tiny': a toy "
                                          "random-weight model of the same architecture (tests, demo)")
    form: str = Field("canvas", pattern="^(canvas|sequence)$", description="LCU++ layout (see trainer/lcu.py)")
    stage: int = Field(1, ge=1, le=2, description="1: 0-ref tasks only; 2: all tasks, weighted by task_weights")
    task_weights: dict[str, float] = Field(default_factory=dict, description="stage 2 sampling weight per task "
                                                                             "(missing tasks: 1.0)")
    max_tokens: int = Field(2048, ge=4, description="cap on image tokens per sample (16x16 pixels each)")
    batch_size: int = Field(1, ge=1, description="samples per step per worker")
    mode: str = Field("lora", pattern="^(lora|full)$", description="LoRA (peft) or full fine-tuning")
    lora_rank: int = Field(64, ge=1, description="released ACE++ recipe: 64")
    lora_alpha: float | None = Field(None, description="None: equal to the rank")
    lr: float | None = Field(None, gt=0, description="AdamW learning rate; None: the released recipe's, 1e-3 "
                                                     "for LoRA, 5e-5 for full fine-tuning")
    adam_eps: float = Field(1e-6, gt=0, description="AdamW epsilon (released recipe 1e-6)")
    weight_decay: float = Field(1e-2, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_steps: int = Field(1000, ge=1)
    grad_clip: float = Field(1.0, gt=0)
    precision: str = Field("auto", pattern="^(auto|fp32|bf16)$", description="auto: bf16 autocast on GPU")
    gradient_checkpointing: bool = Field(True, description="recompute activations in backward")
    sigma_mean: float = Field(0.0, description="logit-normal mean")
    sigma_std: float = Field(1.0, gt=0, description="logit-normal std")
    sigma_shift: float = Field(1.0, gt=0, description="> 1 shifts sigmas towards noise")
    ref_loss_weight: float = Field(1.0, ge=0, description="weight of L_ref in L_ref + L_tar (sequence form)")
    max_sequence_length: int = Field(512, ge=8, description="T5 tokens of the instruction")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    log_every: int = Field(1, ge=1, description="steps between metric reports")
    seed: int = Field(0)
    num_workers: int = Field(1, ge=1, description="Ray Train workers")
    cpus_per_worker: float = Field(0.5, gt=0, description="fractional on small CPU machines")
    use_gpu: str = Field("auto", pattern="^(auto|yes|no)$")
    precompute: bool = Field(False, description="encode VAE latents and text embeddings into side shards first "
                                                "(a Ray job); training then runs no encoder")
    fsdp: bool = Field(False, description="shard the model across GPUs (full fine-tuning on several GPUs)")
    repainting_scales: dict[str, float] = Field(default_factory=dict, description="per-task hint scale s of the "
                                                "condition edit * (1 - s * mask); missing tasks: the released "
                                                "default (schemas/taxonomy.py default_repainting_scale)")
    maskless_layout: str = Field("in_place", pattern="^(in_place|panel)$", description="a mask-less edit image: "
                                 "in_place under a full mask (released ACE++), or panel: a context panel left")
    ref_scale_pad: bool = Field(True, description="references shrunk to a random height in [H/3, H] and padded "
                                                  "back to H, centred (the released trainer always does this)")
    vae_sample: bool = Field(True, description="VAE latents sampled from the posterior (released); False: its mean")
    lora_fused: bool = Field(True, description="one LoRA per fused BFL linear (q/k/v and a single block's "
                                               "proj_mlp share lora_A), as released; False: one per diffusers linear")
    run_name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="None: derived from what the run "
                                 "trains on (s<stage>-<12 hex>: the shard sets' manifests, the settings that change "
                                 "the result, init_from), so the same data resumes and new data starts a new run; "
                                 "a name given here is refused when its folder holds a run of other data")
    init_from: str | None = Field(None, description="start from these weights with a fresh optimiser at step 0 "
                                  "(stage 2 from stage 1): a checkpoint folder, or a run folder "
                                  "<root>/checkpoints/<run> (its latest checkpoint)")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="share of samples held out of training by a hash "
                                 "of (seed, key); 0: no held-out split, no eval at checkpoints")
    eval_samples: int = Field(4, ge=1, description="held-out samples per task whose loss is measured at each "
                                                   "checkpoint (the first found in shard order)")
    eval_draws: int = Field(4, ge=1, description="fixed noise draws per held-out sample in its eval loss")
    eval_images: int = Field(4, ge=0, description="held-out samples inferred into the grid saved at each checkpoint")
    eval_infer_steps: int = Field(4, ge=1, description="denoising steps of the checkpoint grid's inference")
    ui_every: int = Field(10, ge=1, description="steps between updates of the live progress file the Prefect UI "
                                                "follows (also at checkpoints and at the end)")

    @field_validator("task_weights", "repainting_scales")
    @classmethod
    def _known_tasks(cls, v: dict[str, float]) -> dict[str, float]:
        from schemas.taxonomy import TASKS

        unknown = sorted(set(v) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task {unknown[0]!r}; known tasks: {', '.join(sorted(TASKS))}")
        return v

    @field_validator("repainting_scales")
    @classmethod
    def _unit_scales(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: s for k, s in v.items() if not 0.0 <= s <= 1.0}
        if bad:
            raise ValueError(f"repainting scales must lie in [0, 1], got {bad}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _recipe_lr(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("lr") is None:
            data = {**data, "lr": 5e-5 if data.get("mode") == "full" else 1e-3}
        return data

    def repainting_scale(self, task: str) -> float:
        from schemas.taxonomy import default_repainting_scale

        return self.repainting_scales.get(task, default_repainting_scale(task))


class OrchestrationConfig(_Config):
    units_in_flight: int = Field(4, ge=1, description="unit task runs submitted at once per stage (bounds threads "
                                                      "and memory in the flow process)")
    embed_actors: int = Field(2, ge=1, description="embedder actors on Ray (each loads its model once)")


SYNTH_TASKS = ("object_removal", "object_addition", "layer_decouple", "layer_fusion", "inpainting_text_guided",
               "inpainting", "outpainting")
TEXT_TASKS = ("text_removal", "text_addition")
SYNTH_TASKS = SYNTH_TASKS + TEXT_TASKS
# condition maps and restoration (tasks/synth_maps.py): every analysis_<map>, control_<map>, control_multi
MAP_TASKS = tuple(n for n, t in _TASKS.items() if t.family in (_Family.LOW_LEVEL_ANALYSIS,
                                                               _Family.CONTROLLABLE_GENERATION))
SYNTH_TASKS = SYNTH_TASKS + MAP_TASKS
FACE_TASKS = ("facial_editing", "facial_editing_misaligned")  # synthesis.faces: dlib faces + face pairs


class FaceConfig(_Config):
    """Facial editing (ACE B.4.1) on dlib's offline face models; similarities are cosines of unit dlib
    descriptors (README "Face similarity band": the measured table and how the band was set)."""

    fraction: float = Field(1.0, gt=0, le=1, description="share of catalog images searched for faces, by id "
                            "(faces are rare: synthesis.fraction does not apply)")
    min_score: float = Field(0.5, description="HOG detection score counted as a face")
    min_face_px: int = Field(48, ge=8, description="shorter side of the face box at least this (too_small)")
    max_roll_deg: float = Field(30.0, ge=0, description="eye-line angle from horizontal at most this (pose)")
    max_yaw: float = Field(0.35, ge=0, description="nose offset along the eye line / eye distance (pose)")
    min_sharpness: float = Field(15.0, ge=0, description="Laplacian variance of the aligned chip (blurry)")
    band: tuple[float, float] = Field((0.933, 0.982), description="misaligned pairs: union-find band on dlib "
                                      "cosine, the measured equivalent of ArcFace 0.8-0.9")
    aligned_min: float = Field(0.903, description="aligned pairs: same person at least this (dlib's 0.6 L2 "
                               "distance at the median descriptor norm)")
    aligned_max_shift: float = Field(0.02, ge=0, description="aligned pairs: mean landmark offset / image "
                                     "diagonal at most this (same framing)")
    aligned_min_change: float = Field(2.0, ge=0, description="aligned pairs: mean absolute pixel change (0-255) at "
                                      "least this, else dropped as unchanged (a re-encoded copy is no edit)")
    max_pairs_per_set: int = Field(50, ge=1, description="misaligned pairs per union-find set at most")
    max_pairs_per_face: int = Field(4, ge=1, description="aligned pairs per face at most")
    erased_reference: bool = Field(True, description="also a face-erased reference sample per face pair "
                                   "(ACE B.8.2; task reference_generation)")
    erase_grow: float = Field(0.25, ge=0, description="the erased region: face box + landmarks, grown by this "
                              "x box side")

    @field_validator("band")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 1:
            raise ValueError(f"need 0 <= lo <= hi <= 1, got {v}")
        return v
# style pairs (ACE B.4.2) and multi-turn / long-context chains (ACE B.9): their own stages and shard set
CHAIN_TASKS = ("style_editing", "style_transfer_reference", "long_context", "multi_turn")
SYNTH_TASKS = SYNTH_TASKS + CHAIN_TASKS


class StyleConfig(_Config):
    """Style pairs: style features, tight sets at `threshold` (mining/style_sets.py), each set the bank
    renders; content + reference -> target."""

    extractor: str = Field("auto", pattern="^(auto|randconv|vgg16)$", description="auto: VGG16 Gram features "
                           "when models_dir/style/vgg16.safetensors is present and pinned, else fixed-seed random-conv "
                           "Gram features (named in lineage)")
    vgg_sha256: str | None = Field(None, description="pinned sha256 of models_dir/style/vgg16.safetensors (the VGG16 "
                                   "extractor refuses the file without it)")
    threshold: float = Field(0.85, gt=0, le=1, description="style-feature cosine of every set member to its set's "
                             "centre and to the seed it grew from (set on the offline features; ACE's 0.65 is on "
                             "CSD features)")
    pair_min: float = Field(0.7, ge=-1, le=1, description="style-feature cosine of every two members of a set at "
                            "least this (no chains: a set is one style throughout)")
    partition_size: int = Field(512, ge=2, description="catalog images per unit: style sets are found inside one "
                                "unit (style cuts across content clusters, so units are catalog slices)")
    min_set: int = Field(3, ge=2, description="a style set must hold at least this many images")
    max_sets_tried: int = Field(8, ge=1, description="style sets tried per unit, best first, for ones already "
                                "in a bank style (mining/style_fixed.py: re-rendering a member changes it little)")
    probe_members: int = Field(8, ge=1, description="members of a tried set (seeded) re-rendered in each bank "
                               "style to find the style the set is in")
    min_in_style_share: float = Field(0.75, gt=0, le=1, description="a set is in a bank style when at least this "
                                      "share of its probed members are fixed points of it (else the set is not "
                                      "used: not_in_bank_style)")
    max_style_sets: int = Field(4, ge=1, description="style sets in a bank style used per unit at most")
    contents_per_unit: int = Field(32, ge=1, description="content images restyled per unit at most (seeded "
                                   "choice, dealt in turn to the unit's style sets; the rest: over_unit_cap)")
    min_match: float = Field(0.7, gt=0, le=1, description="a rendered target's style cosine to its set's mean "
                             "feature at least this (else dropped: no_style_match)")


class ChainConfig(_Config):
    """Multi-turn (over one mined set) and long-context (over one image) chains."""

    max_turns: int = Field(4, ge=2, le=16, description="turns per chain at most (the inputs of its last sample)")
    preset: str = Field("general_editing", description="multi_turn chains the instructed pairs of this preset")
    pair_batch_rows: int = Field(4096, ge=1, description="instructed pairs read per batch (id columns only)")


class MaskFilterConfig(_Config):
    """ACE App. B.5.2: which segmenter masks are object-like enough to remove."""

    min_area_frac: float = Field(0.01, ge=0, le=1, description="mask area / image area at least this")
    max_area_frac: float = Field(0.25, ge=0, le=1, description="at most this (larger: background, or too much "
                                                               "to fill convincingly)")
    min_box_fill: float = Field(0.35, ge=0, le=1, description="mask area / its bounding box area at least this "
                                                              "(drops thin, scattered masks)")
    max_aspect: float = Field(4.0, ge=1, description="longer / shorter side of the bounding box at most this")
    min_side_px: int = Field(12, ge=1, description="shorter side of the bounding box at least this many pixels")
    max_border_frac: float = Field(0.02, ge=0, le=1, description="share of the image's outer frame the mask may "
                                                                 "cover (objects cut by the frame are dropped)")
    max_overlap: float = Field(0.2, ge=0, le=1, description="overlap with a mask already kept (intersection / "
                                                           "the smaller area) at most this")
    min_score: float = Field(0.0, ge=0, le=1, description="segmenter score (SAM's predicted IoU; the proposer's "
                                                         "contrast) at least this")
    min_objectness: float = Field(0.2, ge=0, le=1, description="objectness (mining/objectness.py: colour and "
                                  "texture contrast with a ring outside the mask x edge strength on its boundary "
                                  "against the ring x solidity) at least this (else not_object); 0: not computed")


class VerifyConfig(_Config):
    min_change: float = Field(6.0, ge=0, description="mean absolute change inside the mask (0-255) at least this")
    max_seam_ratio: float = Field(2.5, gt=0, description="gradient on the mask border in the result / the "
                                                        "source image's mean gradient, at most this")
    max_smear_ratio: float = Field(3.0, gt=0, description="fill against its ring (mining/smear.py): ring / fill "
                                   "fine detail times the square root of the fill's streak odds, at most this "
                                   "(else smear); about 1 for the true background, 5-25 for cv2.inpaint on a "
                                   "large hole in texture")
    refind_iou: float | None = Field(None, gt=0, le=1, description="segment the result again and drop it when a "
                                     "region overlaps the removed object's mask with IoU above this; None: not "
                                     "checked (it costs a second segmentation per sample)")
    artefact_classifier: str | None = Field(None, description="a trained artefact head under models_dir/"
                                            "artefact_classifier (on SigLIP features of the result); None: none runs")
    max_artefact_prob: float = Field(0.5, gt=0, le=1, description="results the artefact classifier scores above "
                                     "this are dropped (reason: artefact)")


class TextSynthConfig(_Config):
    """ACE App. B.5.1: text removal (OCR finds text) and text rendering (OCR finds none), both OCR-verified."""

    ocr: str = Field("rapidocr", pattern="^(rapidocr|paddleocr)$", description="OCR backend: rapidocr (PP-OCR "
                     "ONNX models inside its wheel) or paddleocr (models_dir/paddleocr/det and rec)")
    min_score: float = Field(0.5, ge=0, le=1, description="OCR detections scored below this are not text")
    min_chars: int = Field(2, ge=1, description="OCR detections of fewer characters are not text (single glyphs "
                           "read off texture are the detector's usual false positives)")
    scripts: list[str] = Field(default_factory=lambda: ["en", "zh"], description="scripts rendered (en, zh), "
                               "one drawn per image")
    dilate_px: int = Field(4, ge=0, description="OCR boxes grow by this many pixels before inpainting")
    max_ned: float = Field(0.1, ge=0, le=1, description="rendered text must read back within this normalised "
                           "edit distance")
    min_font_px: int = Field(14, ge=6, description="rendered text is at least this many pixels tall")
    confirm_min_score: float = Field(0.8, ge=0, le=1, description="text removal: an OCR detection is confirmed "
                                     "text with at least this recognition score (mining/text_confirm.py)")
    confirm_max_ned: float = Field(0.34, ge=0, le=1, description="text removal: a second read around the "
                                   "detection, rescaled, agrees with the first: the first's edit distance to its "
                                   "closest part, over the first's length, at most this")
    confirm_scales: list[float] = Field(default_factory=lambda: [2.0, 1.5], description="text removal: the "
                                        "second read's upscales, tried in turn until one agrees (a downscale by "
                                        "the factor where the text would get taller than 256 px)")
    fraction: float | None = Field(None, gt=0, le=1, description="share of catalog images read (by id); None: "
                                   "synthesis.fraction")
    max_images: int | None = Field(None, ge=1, description="read only the first N catalog rows (OCR costs "
                                   "0.2-2 s per image on CPU); None: synthesis.max_images")

    @field_validator("scripts")
    @classmethod
    def _scripts(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in ("en", "zh")]
        if bad or not v:
            raise ValueError(f"text scripts must be en and/or zh, got {v}")
        return list(dict.fromkeys(v))


def _ordered(v: tuple[float, float]) -> tuple[float, float]:
    if not v[0] <= v[1]:
        raise ValueError(f"need low <= high, got {v}")
    return v


class DegradationConfig(_Config):
    """Restoration pairs: a random subset of the operations, in random order, each strength drawn in its range."""

    ops: list[str] = Field(default_factory=lambda: ["noise", "blur", "jpeg", "resize"],
                           description="operations that may be drawn: noise, blur, jpeg, resize (down-up)")
    p_op: float = Field(0.5, gt=0, le=1, description="chance each operation is drawn (at least one always is)")
    noise_sigma: tuple[float, float] = Field((3.0, 25.0), description="gaussian noise std range (0-255 units)")
    poisson_scale: tuple[float, float] = Field((0.5, 4.0), description="poisson noise: levels per photon range")
    blur_sigma: tuple[float, float] = Field((0.6, 3.0), description="gaussian blur std range per axis, px")
    jpeg_quality: tuple[int, int] = Field((15, 60), description="JPEG quality range")
    down_factor: tuple[float, float] = Field((1.5, 4.0), description="down-up scaling factor range")

    @field_validator("ops")
    @classmethod
    def _ops(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if o not in ("noise", "blur", "jpeg", "resize")]
        if bad or not v:
            raise ValueError(f"ops must be a non-empty subset of noise, blur, jpeg, resize; got {v}")
        return list(dict.fromkeys(v))

    @field_validator("noise_sigma", "poisson_scale", "blur_sigma", "jpeg_quality", "down_factor")
    @classmethod
    def _range(cls, v):
        return _ordered(v)


class MapsConfig(_Config):
    """Condition maps (ACE B.2) and restoration pairs: tasks/synth_maps.py."""

    regional_share: float = Field(0.3, ge=0, le=1, description="share of map samples made inside a mask only "
                                  "(the source's pixels outside)")
    regional_area: tuple[float, float] = Field((0.1, 0.6), description="area fraction range of regional masks")
    canny: tuple[int, int] = Field((100, 200), description="cv2.Canny hysteresis thresholds")
    mosaic_block: tuple[float, float] = Field((0.02, 0.06), description="mosaic block side, fraction of the "
                                              "shorter side")
    multi_maps: tuple[int, int] = Field((2, 3), description="maps per control_multi sample (one per segment group)")
    multi_from: list[str] = Field(default_factory=lambda: ["canny", "depth", "grayscale", "mosaic", "contour",
                                                           "scribble", "doodle", "segmentation"],
                                  description="maps a control_multi sample draws from (absent models left out)")
    depth_model: str = Field("depth-anything-v2-small", description="folder under models_dir/depth (DPT or "
                             "Depth-Anything, safetensors)")
    depth_sha256: str | None = Field(None, description="pinned sha256 of its model.safetensors; None: recorded, "
                                     "not checked")
    hed_sha256: str | None = Field(None, description="pinned sha256 of models_dir/hed/ControlNetHED.pth: scribble and "
                                   "doodle maps come from HED edges when it is present (refused unpinned)")
    depth_input_size: int | None = Field(None, ge=14, description="square model input side; None: the model's")
    degradation: DegradationConfig = Field(default_factory=DegradationConfig)

    @field_validator("regional_area")
    @classmethod
    def _area(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] < 1:
            raise ValueError(f"need 0 < low <= high < 1, got {v}")
        return v

    @field_validator("multi_maps")
    @classmethod
    def _multi(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 2 <= v[0] <= v[1] <= 8:
            raise ValueError(f"need 2 <= low <= high <= 8, got {v}")
        return v

    @field_validator("multi_from")
    @classmethod
    def _maps(cls, v: list[str]) -> list[str]:
        ok = ("segmentation", "depth", "pose", "mosaic", "grayscale", "canny", "contour", "doodle", "scribble")
        bad = [m for m in v if m not in ok]
        if bad or len(set(v)) < 2:
            raise ValueError(f"multi_from needs at least two of {', '.join(ok)}; got {v}")
        return list(dict.fromkeys(v))


class SynthesisConfig(_Config):
    tasks: list[str] = Field(default_factory=list, description="synthesis tasks to run: object_removal, "
                             "object_addition, layer_decouple, layer_fusion, inpainting, outpainting; empty: none")
    max_images: int | None = Field(None, ge=1, description="synthesize from the first N catalog images only; "
                                                           "None: all")
    fraction: float = Field(1.0, gt=0, le=1, description="share of catalog images synthesized from, chosen by "
                            "their id (deterministic; each new image is chosen or not on its own)")
    max_side: int = Field(768, ge=32, description="images are downscaled so their longer side is at most this "
                                                 "(the sample's source is that image)")
    partition_size: int = Field(64, ge=1, description="catalog images per unit of synthesis work")
    segmenter: str = Field("auto", pattern="^(auto|sam|regions)$", description="auto: SAM when its checkpoint is "
                           "in models_dir/sam, else the offline region proposer (named in lineage)")
    people: str = Field("auto", pattern="^(auto|on|off)$", description="add MediaPipe's selfie-segmentation "
                        "person mask to the segmenter's regions; auto: when models_dir/mediapipe has it (fetched "
                        "at install); on: a clear error without it")
    sam_variant: str = Field("vit_b", pattern="^(vit_b|vit_l|vit_h)$", description="which SAM checkpoint")
    sam_points_per_side: int = Field(32, ge=1, description="SAM automatic generator's point grid")
    inpainter: str = Field("auto", pattern="^(auto|lama|cv2)$", description="auto: big-lama when models_dir/"
                           "lama/big-lama.pt is present, else cv2.inpaint (named in lineage)")
    object_namer: str = Field("auto", pattern="^(auto|siglip|generic)$", description="names for {object_name}: "
                              "auto: SigLIP zero-shot over a label vocabulary when its files are in models_dir/siglip, "
                              "else generic wording (named in lineage); inpainting_text_guided needs a name")
    object_name_threshold: float = Field(0.3, gt=0, le=1, description="a label is used when its probability "
                                         "reaches this; below it the object stays unnamed")
    objects_per_image: int = Field(2, ge=1, description="object removals per image at most (best-scored masks)")
    dilate_px: int = Field(7, ge=0, description="object masks grow by this many pixels before inpainting")
    repaint_area: tuple[float, float] = Field((0.05, 0.35), description="area fraction range of random "
                                              "repainting masks (strokes and boxes)")
    outpaint_extent: tuple[float, float] = Field((0.15, 0.4), description="fraction of the width or height "
                                                 "outpainting masks cover")
    seed: int = Field(0, description="seeds random masks and instruction phrasings")
    chat_instructions: bool = Field(False, description="rewrite each single-input sample's templated instruction "
                                    "with the chat endpoint of mining.instructions (base_url, model, ...), from the "
                                    "sample's edit and target images; the template stays when it gives none")
    shard_name: str = Field("synthesis", pattern=r"^[A-Za-z0-9_-]+$",
                            description="the shard set: <root>/shards/<prefix>-<shard_name>")
    filters: MaskFilterConfig = Field(default_factory=MaskFilterConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    faces: FaceConfig = Field(default_factory=FaceConfig)
    text: TextSynthConfig = Field(default_factory=TextSynthConfig)
    maps: MapsConfig = Field(default_factory=MapsConfig)
    style: StyleConfig = Field(default_factory=StyleConfig)
    chains: ChainConfig = Field(default_factory=ChainConfig)

    @field_validator("tasks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in SYNTH_TASKS + FACE_TASKS]
        if bad:
            raise ValueError(f"unknown synthesis task {bad[0]!r}; synthesis makes: "
                             f"{', '.join(SYNTH_TASKS + FACE_TASKS)}")
        return list(dict.fromkeys(v))

    @field_validator("repaint_area", "outpaint_extent")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] < 1:
            raise ValueError(f"need 0 < low <= high < 1, got {v}")
        return v


class SupervisionConfig(_Config):
    """Per-task checks that a sample teaches what its instruction says (mining/supervision.py): run on every
    sample before it is packed (dropped and counted by task and reason) and by `aceforge shards audit`."""

    enabled: bool = Field(True, description="run the checks when packing (audit runs them regardless)")
    min_change: float = Field(1.0, ge=0, description="mean absolute difference (0-255) between each input and the "
                              "target (inside the edit's mask when it has one) at least this, or ...")
    min_changed_share: float = Field(0.005, ge=0, le=1, description="... at least this share of its pixels "
                                     "changed by more than 16 levels (a local edit), else no_change")
    min_colourfulness: float = Field(4.0, ge=0, description="grayscale / colourise: the colour image's "
                                     "colourfulness (Hasler-Suesstrunk) at least this (else already_grey)")
    min_map_content: dict[str, float] = Field(
        default_factory=lambda: {"default": 0.01, "pose": 0.002, "canny": 0.005},
        description="share of a map's pixels inside its mask that differ from its most common value, per map "
                    "kind ('default' for the rest), at least this (else flat_region)")
    group_min_inliers: int = Field(8, ge=4, description="series / reference / general editing: RANSAC "
                                   "inliers of keypoint matches that make two images one subject "
                                   "(mining/geometric.py; different photos give 0-4, crops, flips, colour "
                                   "and compression changes of one photo 10 and up)")
    text_min_score: float = Field(0.8, ge=0, le=1, description="text removal: OCR score of the named text "
                                  "at least this (mining/text_confirm.py)")
    text_max_ned: float = Field(0.34, ge=0, le=1, description="text: a second read, rescaled, agrees with the "
                                "first, and the text read agrees with the text the instruction names, within this "
                                "normalised edit distance (else text_unconfirmed)")
    text_confirm_scales: list[float] = Field(default_factory=lambda: [2.0, 1.5], description="text: the "
                                             "second read's upscales, tried in turn until one agrees (a downscale "
                                             "by the factor where the text would get taller than 256 px)")
    text_left_min_score: float = Field(0.5, ge=0, le=1, description="text removal: a read of two glyphs or "
                                       "more at this score inside the target's mask is text left (else "
                                       "text_unconfirmed)")
    style_min_cosine: float = Field(0.85, ge=-1, le=1, description="style reference and target: style-feature "
                                    "cosine (offline random-conv features, seed 0) at least this (else "
                                    "style_mismatch; the style stage picks its reference by it too)")
    style_min_margin: float = Field(0.45, ge=-2, le=2, description="style reference: its cosine to the target "
                                    "minus the edit image's cosine to the target at least this (a reference no "
                                    "nearer the target's style than the content teaches no style; measured: "
                                    "family references >= 0.49, photo references <= 0.41 on poster and ink)")
    style_fixed_max_change: float = Field(16.0, ge=0, le=255, description="a reference labelled with a bank style "
                                          "is in it when re-rendering it changes it by at most this mean absolute "
                                          "pixel value (0-255; poster / ink families 0-11; photos 18-190, but "
                                          "7-16 under watercolour, which the cosine rejects)")
    style_fixed_min_cosine: float = Field(0.95, ge=-1, le=1, description="a reference labelled with a bank "
                                          "style: its re-rendering's style-feature cosine to it at least this "
                                          "(poster / ink families >= 0.99; photos within the change above <= 0.93)")
    smear_max_ratio: float = Field(3.0, gt=0, description="a removal's fill against its ring (mining/smear.py: "
                                   "ring / fill fine detail x sqrt of the fill's streak odds) at most this (else "
                                   "smear); the same statistic as synthesis.verify.max_smear_ratio")
    face_margin: float = Field(0.01, ge=0, description="aligned face pairs: cosine at least the identity "
                               "threshold plus this (else face_margin)")


class RunConfig(_Config):
    root: str = Field(DemoFiles("demo_out").root, description="fsspec URI where every stage writes")
    models_dir: str = Field(
        default_factory=lambda: os.environ.get("ACEFORGE_MODELS", "models"),
        description="folder holding model weights (env ACEFORGE_MODELS)",
    )
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    shards: ShardConfig = Field(default_factory=ShardConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)

    @field_validator("root")
    @classmethod
    def _root_filesystem(cls, v: str) -> str:
        if "://" in v:
            import fsspec

            protocol = v.split("://", 1)[0]
            try:
                fsspec.get_filesystem_class(protocol)
            except (ImportError, ValueError) as e:
                raise ValueError(f"no filesystem for {protocol}:// here ({e})") from None
        return v


def _allowed_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model that `loc` (minus the bad key) points into."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part))
        ann = field.annotation if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            current = ann
        else:
            break
    return sorted(current.model_fields)


def _format(err: ValidationError, model: type[BaseModel], origin: str) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_at(model, e["loc"]))
            lines.append(f"unknown key '{where}' in {origin}; allowed here: {allowed}")
        else:
            lines.append(f"bad value for '{where}' in {origin}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: dict[str, Any] | None, model: type[_Config] = RunConfig, origin: str = "config"):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must be a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(e, model, origin)) from None


def load_config(path: str | Path | None, model: type[_Config] = RunConfig, overrides: dict[str, Any] | None = None):
    """Load a YAML config (or the defaults when path is None), then apply dotted overrides."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{p} is not valid YAML{where}: {problem}") from None
        origin = str(p)
        if not isinstance(data, dict):
            raise ConfigError(f"{origin} must hold a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(data, model, origin)


def config_hash(cfg: BaseModel) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]
