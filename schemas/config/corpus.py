"""The corpus: ingest, shard writing, and the demo corpus."""

from __future__ import annotations

import os

from pydantic import Field

from schemas.config.base import _Config


class IngestConfig(_Config):
    max_pixels: int = Field(80_000_000, gt=0, description="pixel cap; larger images are quarantined as too_large")
    min_side: int = Field(64, ge=1, description="shorter side below this is quarantined as too_small")
    max_bytes: int = Field(200 * 2**20, gt=0, description="file size cap; larger files are quarantined")
    workers: int = Field(0, ge=0, description="decode processes; 0 = one per core")
    chunk_size: int = Field(16, ge=1, description="files per chunk (what one decoding process takes at a time) "
                            "inside a partition")
    partition_files: int = Field(10_000, ge=1, description="files per ingest partition (one task run each)")
    dedup_buckets: int = Field(
        64, ge=1, le=65536, description="hash-range buckets of exact dedup: the leading bits of an image's content "
        "hash decide its bucket, and one dedup unit per bucket and generation holds that bucket's ids (about "
        "images / buckets of them, ~200 bytes each: 64 keeps a unit near 2 GB at 0.7 B images; raise it for "
        "more). Fixed by a catalog's first plan: later generations use the number it recorded")
    extensions: list[str] | None = Field(
        None, description="file endings that count as images when listing folders and tars; None: every format "
                          "the installed Pillow decodes (avif, jpeg2000, tga, ...); what is not listed is counted "
                          "as skipped, with its ending")
    follow_symlinks_outside: bool = Field(
        False, description="read links in a folder or glob source that lead outside it; off: such a link is "
                           "quarantined as symlink_outside_source, unread (links within the source are followed)")

    def resolved_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)


class QualityConfig(_Config):
    scores: bool = Field(True, description="measure each sample's quality scores where it is packed (changed share "
                         "inside / outside the mask, 1 - SSIM; SigLIP similarity and instruction direction when "
                         "the SigLIP weights are in models_dir) into its json and the samples table")
    thumbnails_per_task: int = Field(4, ge=0, le=64, description="thumbnail strips (edit | mask | target) each "
                                     "packing unit writes per task for the dataset report")


class ShardConfig(_Config):
    maxcount: int = Field(1000, ge=1, description="samples per shard at most")
    maxsize: int = Field(1 << 30, ge=1 << 10, description="bytes per shard at most (before the tar closes)")
    prefix: str = Field("shard", pattern=r"^[A-Za-z0-9_-]+$", description="shard file names: <prefix>-000000.tar")
    image_ext: str = Field("auto", pattern="^(auto|png|jpg|webp)$", description="the one extension of every image "
                           "field in a shard set (masks are always png; synthesized shard sets always png); auto: the "
                           "format of its first image. An image stored otherwise is re-encoded: as png losslessly, "
                           "as jpg / webp at jpeg_quality (lossy). A JPEG photo corpus stays JPEG, its bytes kept; "
                           "png keeps every pixel of every source (~8x larger shards for photos)")
    jpeg_quality: int = Field(95, ge=1, le=100, description="quality of images re-encoded as jpg or webp")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="per-sample quality scores and "
                                   "the report's thumbnails")


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
