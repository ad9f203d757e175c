"""A local vision-language model through transformers' own classes (`AutoModelForImageTextToText`,
`AutoProcessor`), safetensors only, for instructions written without a server.

    <models_dir>/<folder>/config.json + *.safetensors + the processor's files (its chat template included)

One prompt per call is a user message of text and images, rendered by the folder's chat template (a system
role is folded into the user text: not every template has one); prompts are generated together, padded on
the left, greedily (the same pair gets the same text again). The house pattern: cheap __init__, setup()
loads once per worker, __call__ on a batch, resources() a GPU when the worker has one (or `device` asks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mining.models.base import ModelWrapper
from mining.models.embedders import MissingModelError
from schemas.resources import Resources


class LocalVLM(ModelWrapper):
    RESOURCES = Resources(cpus=1.0)
    GPU_RESOURCES = Resources(cpus=1.0, gpus=1.0)

    def __init__(self, folder: str | Path, device: str = "auto", max_new_tokens: int = 200):
        self.folder = Path(folder)
        self.device_pref, self.max_new_tokens = device, max_new_tokens
        self._model = None

    def resources(self) -> Resources:
        if self.device_pref == "cuda":
            return self.GPU_RESOURCES
        if self.device_pref == "cpu":
            return self.RESOURCES
        return super().resources()

    def available(self) -> bool:
        return (self.folder / "config.json").is_file() and any(self.folder.glob("*.safetensors"))

    def setup(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not self.available():
            raise MissingModelError(f"local VLM not found: expected {self.folder}/config.json and *.safetensors "
                                    "(an image-text-to-text model saved with its processor)")
        dev = self.device_pref if self.device_pref != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if dev == "cuda" else torch.float32
        self._processor = AutoProcessor.from_pretrained(str(self.folder), local_files_only=True)
        self._processor.tokenizer.padding_side = "left"  # generation continues every prompt at its end
        model = AutoModelForImageTextToText.from_pretrained(str(self.folder), local_files_only=True,
                                                            use_safetensors=True, dtype=dtype)
        self._model = model.to(dev).eval()
        self._device = dev

    def __call__(self, prompts: Sequence[tuple[str, list]]) -> list[str]:
        """The generated text of each (text, [PIL images]) prompt, the images after the text."""
        import torch

        self.setup()
        texts = [self._processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": t}, *({"type": "image"} for _ in ims)]}],
            add_generation_prompt=True, tokenize=False) for t, ims in prompts]
        inputs = self._processor(text=texts, images=[list(ims) for _, ims in prompts], padding=True,
                                 return_tensors="pt").to(self._device, dtype=self._model.dtype)
        with torch.inference_mode():
            out = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self._processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
