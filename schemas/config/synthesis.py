"""Synthesized samples: the task tuples, the synthesis section and its sub-models (mask filters, verification,
faces, text, condition maps, degradation, style, chains)."""

from __future__ import annotations

from pydantic import Field, field_validator

from schemas.config.base import _Config
from schemas.taxonomy import TASKS as _TASKS
from schemas.taxonomy import Family as _Family


# Synthesized tasks by the stages that make them; SYNTH_TASKS is all of them, in this order.
# object, layer and repainting pairs (stages/synthesis/objects.py, stages/synthesis/repaint.py)
OBJECT_AND_REPAINT_TASKS = ("object_removal", "object_addition", "layer_decouple", "layer_fusion",
                            "inpainting_text_guided", "inpainting", "outpainting")
TEXT_TASKS = ("text_removal", "text_addition")
# condition maps and restoration (stages/synthesis/maps.py): every analysis_<map>, control_<map>, control_multi
MAP_TASKS = tuple(n for n, t in _TASKS.items() if t.family in (_Family.LOW_LEVEL_ANALYSIS,
                                                               _Family.CONTROLLABLE_GENERATION))
# style pairs (ACE B.4.2) and multi-turn / long-context chains (ACE B.9): their own stages and shard set
STYLE_AND_CHAIN_TASKS = ("style_editing", "style_transfer_reference", "long_context", "multi_turn")
SYNTH_TASKS = OBJECT_AND_REPAINT_TASKS + TEXT_TASKS + MAP_TASKS + STYLE_AND_CHAIN_TASKS
FACE_TASKS = ("facial_editing", "facial_editing_misaligned")  # synthesis.faces: dlib faces + face pairs
# captions of catalog images by the chat endpoint or the local VLM (stages/synthesis/captions.py): never in
# SYNTH_TASKS, since a run without a captioning model cannot make them
CAPTION_TASKS = ("text_to_image",)


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
    bucket_faces: int = Field(50_000, ge=2, description="face pairs: faces per bucket (one pair unit each) about "
                              "this; buckets = ceil(faces / this), by a spherical K-means quantiser over the "
                              "descriptors; a pair whose faces share no bucket is not found (bucket_spill)")
    fit_sample: int = Field(200_000, ge=2, description="face pairs: faces (chosen by id) the bucket quantiser is "
                            "fitted on; the quantiser is kept until the bucket count it was fitted for is off by "
                            "more than 2x")
    bucket_spill: float = Field(0.1, ge=0, le=2, description="face pairs: a face is also in up to "
                                "bucket_max_extra other buckets whose centroid is within this cosine of its nearest "
                                "(on descriptors less their mean; a pair near a bucket boundary is then found, kept "
                                "by the lowest bucket holding both faces); 0: one bucket per face")
    bucket_max_extra: int = Field(2, ge=0, description="face pairs: extra buckets a face may be in at most")
    exact_max: int = Field(4096, ge=2, description="face pairs: a bucket of at most this many faces is searched "
                           "exactly (all pairs); a larger one by a faiss IVF index (approximate)")
    ann_nprobe: int = Field(32, ge=1, description="face pairs: IVF lists searched per face in a bucket above "
                            "exact_max (more: higher recall, slower)")

    @field_validator("band")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 1:
            raise ValueError(f"need 0 <= lo <= hi <= 1, got {v}")
        return v


class StyleConfig(_Config):
    """Style pairs: style features, tight style sets at `threshold` (mining/style/sets.py), each style set the bank
    renders; content + reference -> target."""

    renamed = {"contents_per_unit": "contents_per_item"}

    extractor: str = Field("auto", pattern="^(auto|randconv|vgg16)$", description="auto: VGG16 Gram features "
                           "when models_dir/style/vgg16.safetensors is present and pinned, else fixed-seed random-conv "
                           "Gram features (named in lineage)")
    vgg_sha256: str | None = Field(None, description="pinned sha256 of models_dir/style/vgg16.safetensors (the VGG16 "
                                   "extractor refuses the file without it)")
    threshold: float = Field(0.85, gt=0, le=1, description="style-feature cosine of every style set member to its "
                             "centre and to the seed it grew from (set on the offline features; ACE's 0.65 is on "
                             "CSD features)")
    pair_min: float = Field(0.7, ge=-1, le=1, description="style-feature cosine of every two members of a style set at "
                            "least this (no chains: a style set is one style throughout)")
    partition_size: int = Field(512, ge=2, description="catalog images per style-features item (and content pool "
                                "of a style unit); style sets are found across the corpus, in style buckets")
    bucket_images: int = Field(2048, ge=2, description="style sets: images per style bucket (one style unit each) "
                               "about this; buckets = ceil(images / this), by a spherical K-means quantiser over the "
                               "style features; memory of a unit: its bucket's (n, n) cosines (2048: 16 MiB)")
    fit_sample: int = Field(100_000, ge=2, description="style sets: images (chosen by id) the bucket quantiser is "
                            "fitted on; kept until the bucket count it was fitted for is off by more than 2x")
    min_set: int = Field(3, ge=2, description="a style set must hold at least this many images")
    max_sets_tried: int = Field(8, ge=1, description="style sets tried per item, best first, for ones already "
                                "in a bank style (mining/style/fixed.py: re-rendering a member changes it little)")
    probe_members: int = Field(8, ge=1, description="members of a tried style set (seeded) re-rendered in each bank "
                               "style to find the style the style set is in")
    min_in_style_share: float = Field(0.75, gt=0, le=1, description="a style set is in a bank style when at least "
                                      "this share of its probed members are fixed points of it (else it is not "
                                      "used: not_in_bank_style)")
    max_style_sets: int = Field(4, ge=1, description="style sets in a bank style used per item at most")
    contents_per_item: int = Field(32, ge=1, description="content images restyled per work item at most (seeded "
                                   "choice, dealt in turn to the item's style sets; the rest: over_unit_cap)")
    min_match: float = Field(0.7, gt=0, le=1, description="a rendered target's style cosine to its style set's mean "
                             "feature at least this (else dropped: no_style_match)")


class ChainConfig(_Config):
    """Multi-turn (over one preset's mined pairs) and long-context (over one image) chains."""

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
    min_objectness: float = Field(0.2, ge=0, le=1, description="objectness (mining/objects/objectness.py: colour and "
                                  "texture contrast with a ring outside the mask x edge strength on its boundary "
                                  "against the ring x solidity) at least this (else not_object); 0: not computed")


class VerifyConfig(_Config):
    min_change: float = Field(6.0, ge=0, description="mean absolute change inside the mask (0-255) at least this")
    max_seam_ratio: float = Field(2.5, gt=0, description="gradient on the mask border in the result / the "
                                                        "source image's mean gradient, at most this")
    max_smear_ratio: float = Field(3.0, gt=0, description="fill against its ring (mining/objects/smear.py): ring / fill "
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
                                     "text with at least this recognition score (mining/text/confirm.py)")
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
    """Condition maps (ACE B.2) and restoration pairs: stages/synthesis/maps.py."""

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
    partition_size: int = Field(64, ge=1, description="catalog images per synthesis work item")
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
    object_detector: str = Field("auto", pattern="^(auto|owlv2|off)$", description="named objects (ACE B.5.2): "
                                 "an open-vocabulary detector (transformers zero-shot detection, models_dir/detector/"
                                 "owlv2-base-patch16-ensemble) tags each image from object_vocabulary and its boxes "
                                 "prompt SAM; the label is the object's name. auto: when its folder is there and SAM "
                                 "is the segmenter; owlv2: a clear error without either; off: never")
    object_vocabulary: list[str] = Field(default_factory=list, description="labels the detector looks for; empty: "
                                         "the built-in everyday-object vocabulary (mining/objects/names.py)")
    object_detector_threshold: float = Field(0.2, ge=0, le=1, description="detections scoring this and above "
                                             "prompt SAM")
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
        bad = [t for t in v if t not in SYNTH_TASKS + FACE_TASKS + CAPTION_TASKS]
        if bad:
            raise ValueError(f"unknown synthesis task {bad[0]!r}; synthesis makes: "
                             f"{', '.join(SYNTH_TASKS + FACE_TASKS + CAPTION_TASKS)}")
        return list(dict.fromkeys(v))

    @field_validator("repaint_area", "outpaint_extent")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] < 1:
            raise ValueError(f"need 0 < low <= high < 1, got {v}")
        return v
