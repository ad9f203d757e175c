"""Every model the pipeline can use, the files it expects under the models directory, and what happens
without it. `aceforge models` prints this."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mining.models.embedders import SIGLIP_FILES, OfflineEmbedder, siglip_dir
from mining.faces.face import face_model_paths
from mining.objects.inpaint import LAMA_MD5, Cv2Inpainter, lama_path
from mining.models.mediapipe import MP_VERSION, mp_model_files
from mining.objects.segment import SAM_CHECKPOINTS, RegionProposer, sam_path
from schemas.config import RunConfig


@dataclass(frozen=True)
class ModelStatus:
    name: str
    purpose: str
    files: tuple[Path, ...]
    present: bool
    fallback: str


def model_status(cfg: RunConfig) -> list[ModelStatus]:
    models = Path(cfg.models_dir)
    sig = tuple(siglip_dir(models) / f for f in SIGLIP_FILES)
    face = face_model_paths(models)
    out = [
        ModelStatus("ViT-B-16-SigLIP (open_clip)", "image features for clustering pairs", sig,
                    all(p.is_file() for p in sig), f"offline embedder '{OfflineEmbedder.name}' (recorded in lineage)"),
        ModelStatus("ArcFace-compatible face model", "misaligned facial-editing pairs (0.8-0.9 band)", face,
                    all(p.is_file() for p in face), "facial preset unavailable (clear error)"),
    ]
    variant = cfg.synthesis.sam_variant
    sam = sam_path(models, variant)
    out.append(ModelStatus(f"SAM {variant} (segment-anything, md5 {SAM_CHECKPOINTS[variant][1]})",
                           "object masks for removal / addition synthesis", (sam,), sam.is_file(),
                           f"offline region proposer '{RegionProposer.name}' (recorded in lineage)"))
    lama = lama_path(models)
    out.append(ModelStatus(f"big-lama TorchScript (md5 {LAMA_MD5})", "inpainting for object removal synthesis",
                           (lama,), lama.is_file(), f"'{Cv2Inpainter.name}' (recorded in lineage)"))
    ic = cfg.mining.instructions
    if ic.backend == "local_vlm":
        from mining.models.vlm import LocalVLM

        vlm = LocalVLM(models / ic.local_model)
        out.append(ModelStatus(f"local VLM {ic.local_model or '<unset>'} (transformers image-text-to-text, "
                               "safetensors)", "instructions without a chat endpoint (backend local_vlm)",
                               (vlm.folder / "config.json",), vlm.available(),
                               "none: the instructions stage fails until it is there"))
    from mining.objects.detect import DETECTOR_MODEL, detector_dir

    det = detector_dir(models, DETECTOR_MODEL)
    out.append(ModelStatus(f"open-vocabulary detector {DETECTOR_MODEL} (transformers zero-shot detection, "
                           "safetensors)", "named objects: labels and boxes that prompt SAM (ACE B.5.2)",
                           (det / "config.json", det / "model.safetensors"),
                           (det / "config.json").is_file() and (det / "model.safetensors").is_file(),
                           "class-agnostic masks, named by the object namer (recorded in lineage)"))
    out.extend(_mediapipe_status(models))
    out.append(_style_status(models, cfg.synthesis.style.vgg_sha256))
    m = cfg.synthesis.maps
    from mining.maps.depth import WEIGHTS, DepthEstimator, depth_dir
    from mining.maps.hed import HedEdges, hed_path

    depth = (depth_dir(models, m.depth_model) / "config.json", depth_dir(models, m.depth_model) / WEIGHTS)
    out.append(ModelStatus(f"depth {m.depth_model} (transformers, safetensors)", "depth maps (analysis / control)",
                           depth, DepthEstimator(models, m.depth_model).available(),
                           "none: depth samples dropped as depth_model_absent"))
    hed = hed_path(models)
    out.append(ModelStatus("HED (ControlNet annotators, sha256 pinned by synthesis.maps.hed_sha256)",
                           "soft edges for scribble and doodle maps", (hed,),
                           HedEdges(models, m.hed_sha256).available() and m.hed_sha256 is not None,
                           "classical scribble / doodle stand-ins (named in lineage)"))
    if cfg.mining.pair_classifier:
        cls = models / cfg.mining.pair_classifier
        out.append(ModelStatus("pair classifier", "second-level pair check (Table 4 bounds)", (cls,),
                               cls.is_file(), "none: the run fails until it is trained"))
    else:
        out.append(ModelStatus("pair classifier", "second-level pair check (Table 4 bounds)",
                               (models / "pair_classifier" / "<name>.safetensors",), False,
                               "pass-through: pairs keep no classifier score, lineage says none ran"))
    return out


def _mediapipe_status(models: Path) -> list[ModelStatus]:
    fix = "none: the stages using it report it missing (fetch: aceforge models pull mediapipe, or python -m mining.models.mediapipe fetch)"
    out = []
    for label, purpose, names in (
            ("MediaPipe selfie segmentation", "person masks for object synthesis", ("selfie_segmentation.tflite",)),
            ("MediaPipe BlazePose full", "OpenPose-18 pose maps for controllable generation",
             ("pose_detection.tflite", "pose_landmark_full.tflite"))):
        files = mp_model_files(models, names)
        out.append(ModelStatus(f"{label} (tflite from mediapipe {MP_VERSION}, sha256 pinned)", purpose, files,
                               all(p.is_file() for p in files), fix))
    return out


def _style_status(models: Path, sha256: str | None) -> ModelStatus:
    from mining.style.features import VGG_SHA256, RandConvStyle, vgg_path

    path = vgg_path(models)
    return ModelStatus("VGG16 features (torchvision, safetensors, sha256 pinned)", "style features for style pairs",
                       (path,), path.is_file() and (sha256 or VGG_SHA256) is not None,
                       f"'{RandConvStyle.name}' (fixed-seed random conv Gram statistics, recorded in lineage)")


@dataclass(frozen=True)
class PlannedModel:
    """A file an enabled stage will load. `required`: the config chose this model by name (absent is an
    error); else it is loaded only when present (absent: the stage's fallback). `digest`: the pinned
    checksum (`algo` md5 or sha256) the file must match; None where nothing pins it."""
    name: str
    path: Path
    required: bool
    algo: str | None = None
    digest: str | None = None
    unpinned_error: str | None = None  # present but unpinned: the stage refuses it, with this reason

