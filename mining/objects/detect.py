"""Open-vocabulary object detection (ACE App. B.5.2, Grounded-SAM style): a detector tags each image with
labels from a vocabulary and boxes; the boxes prompt SAM and the label names the object."""

from __future__ import annotations

DETECTOR_MODEL = "owlv2-base-patch16-ensemble"  # folder under <models_dir>/detector (google/<this> on the Hub)
DETECTOR_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json",
                  "vocab.json", "merges.txt", "special_tokens_map.json")
