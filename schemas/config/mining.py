"""Pair mining (embeddings, clusters, pairs) and the instructions written for the pairs."""

from __future__ import annotations

from pydantic import Field, model_validator

from schemas.config.base import _Config


class InstructionConfig(_Config):
    backend: str = Field("template", pattern="^(none|template|chat|local_vlm)$",
                         description="template: a generic phrasing per task (lineage: template:1), so shards land "
                                     "without an endpoint; chat: an OpenAI-compatible endpoint serving a "
                                     "vision-language model; local_vlm: a transformers vision-language model "
                                     "under models_dir (local_model), run by the stage itself, on a GPU where "
                                     "the worker has one; none: pairs stay unpacked in pairs/")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="chat endpoint root (.../v1)")
    model: str = Field("", description="model name the endpoint serves")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key, if any")
    timeout_s: float = Field(60.0, gt=0, description="per socket operation (connect, each read)")
    retries: int = Field(3, ge=0, description="retries on 5xx, 429, timeouts and connection errors")
    backoff_s: float = Field(1.0, ge=0, description="pause before the first retry, doubled before each next one "
                             "(within deadline_s)")
    in_flight: int = Field(16, ge=1, description="chat requests kept in flight by one worker: a served model "
                           "answers about in_flight / latency requests a second")
    requests_per_second: float = Field(0.0, ge=0, description="at most this many chat requests started a second "
                                       "by one worker, retries included (0: no limit)")
    max_tokens: int = Field(200, ge=1, description="tokens a reply may have (chat max_tokens; local_vlm "
                            "max_new_tokens)")
    deadline_s: float = Field(90.0, gt=0, description="per instruction, retries included: the call is abandoned "
                              "(its connection closed) and the template kept once this is spent")
    breaker_failures: int = Field(5, ge=1, description="after this many failed calls in a row the endpoint is "
                                  "not called again in the stage's work item (templates instead, counted)")
    max_instruction_chars: int = Field(500, ge=1, description="a reply whose instruction or caption is longer "
                                       "is refused (template instead, counted as chat_too_long), not cut")
    local_model: str = Field("", description="local_vlm: folder under models_dir holding a transformers "
                             "image-text-to-text model (config.json, safetensors weights, processor files)")
    local_batch_size: int = Field(4, ge=1, description="local_vlm: pairs per generate() call")
    local_device: str = Field("auto", pattern="^(auto|cpu|cuda)$",
                              description="local_vlm: auto runs on the GPU when the worker sees one")


class MiningConfig(_Config):
    embedder: str = Field("auto", pattern="^(auto|siglip|offline)$",
                          description="auto: SigLIP when its weights are in models_dir, else the offline fallback")
    batch_size: int = Field(32, ge=1, description="images per embedder call")
    partition_size: int = Field(4096, ge=1, description="images per embedding partition file")
    k: int | None = Field(None, ge=1, description="K-means clusters; None: n/50, between 1 and 10,000")
    max_cluster_size: int = Field(100_000, ge=2, description="clusters above this are split again")
    kmeans_niter: int = Field(20, ge=1, description="K-means iterations")
    layout_rows: int = Field(1_000_000, ge=1, description="rows per by-cluster layout work item (a range of "
                             "clusters; a larger cluster alone): its float16 vectors are written through a local "
                             "memory map, and it reads every embedding partition's labels")
    recluster_drift: float = Field(0.05, ge=0, le=2, description="new images are assigned to the existing "
                                   "centroids unless their mean cosine to them is this far below the fit's")
    recluster_growth: float = Field(1.0, ge=0, description="re-cluster once the corpus has grown by this "
                                    "fraction since the last fit (1.0: doubled)")
    seed: int = Field(0, description="seeds K-means and per-set pair sampling")
    band_lo: float | None = Field(None, ge=0, le=1, description="None: the embedder's calibrated band (SigLIP 0.85)")
    band_hi: float | None = Field(None, ge=0, le=1, description="None: the embedder's calibrated band (SigLIP 0.98)")
    block: int = Field(4096, ge=16, description="rows per similarity block; memory ~ block^2 * 4 bytes")
    max_pairs_per_set: int = Field(64, ge=1, description="cap on pairs emitted per union-find set")
    clusters_per_batch: int = Field(256, ge=1, description="at most this many clusters per mining work item "
                                    "(one task run each)")
    batch_rows: int = Field(100_000, ge=2, description="at most this many rows per mining work item; a cluster "
                            "with more is a work item of its own, its band edges computed in row blocks of "
                            "half this (the same edges as one pass); memory per item ~ rows x dim x 4 bytes")
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
