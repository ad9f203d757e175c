"""The per-task checks every sample passes before it is packed."""

from __future__ import annotations

from pydantic import Field

from schemas.config.base import _Config


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
                                   "(mining/pairs/geometric.py; different photos give 0-4, crops, flips, colour "
                                   "and compression changes of one photo 10 and up)")
    text_min_score: float = Field(0.8, ge=0, le=1, description="text removal: OCR score of the named text "
                                  "at least this (mining/text/confirm.py)")
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
    smear_max_ratio: float = Field(3.0, gt=0, description="a removal's fill against its ring (mining/objects/smear.py: "
                                   "ring / fill fine detail x sqrt of the fill's streak odds) at most this (else "
                                   "smear); the same statistic as synthesis.verify.max_smear_ratio")
    face_margin: float = Field(0.01, ge=0, description="aligned face pairs: cosine at least the identity "
                               "threshold plus this (else face_margin)")
