"""Instructions from a local VLM: a tiny random-initialised LLaVA (CLIP vision tower, Llama text model) with a
tokenizer trained here, saved as safetensors and loaded through the Auto classes. Random weights write
gibberish: what is checked is the pipeline, i.e. every generated text is validated like a chat reply and
either kept or counted as rejected (the pair then gets the template), never replaced by made-up text."""

import io
from pathlib import Path

import pytest
from PIL import Image

from mining.instructions.local_vlm import LocalVLMWriter
from mining.instructions.writers import BadReply, InstructionError, parse_content
from mining.models.vlm import LocalVLM
from schemas.config import InstructionConfig
from schemas.records import PairRecord
from stages.pairs.instruct import instruct_pairs, load_instructed, make_writer

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
            "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant: {% endif %}")


def tiny_llava(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(['{"caption": "a red ball", "instruction": "Make {image} blue."}'] * 4,
                            trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<image>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 16},
                                                             crop_size={"height": 16, "width": 16}),
                          tokenizer=fast, patch_size=8, vision_feature_select_strategy="default",
                          chat_template=TEMPLATE, image_token="<image>", num_additional_image_tokens=1)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=16, patch_size=8, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(fast), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                                bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                                pad_token_id=fast.pad_token_id),
        image_token_index=fast.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_llava(root / "vlm" / "tiny-llava")
    return root


def _png(path, colour):
    buf = io.BytesIO()
    Image.new("RGB", (24, 20), colour).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return str(path)


def _pair(pid, a="a", b="b"):
    return PairRecord(pair_id=pid, source_id=a, target_id=b, task="general_editing", similarity=0.9)


class Recording:
    """The model, keeping every text it generated."""

    def __init__(self, model):
        self.model, self.folder, self.texts = model, model.folder, []

    def __call__(self, prompts):
        out = self.model(prompts)
        self.texts.extend(out)
        return out


def test_a_tiny_random_vlm_loads_and_its_text_is_validated_or_counted(models_dir, tmp_path):
    folder = models_dir / "vlm" / "tiny-llava"
    assert sorted(p.suffix for p in folder.glob("*.safetensors")) == [".safetensors"]
    model = Recording(LocalVLM(folder, device="cpu", max_new_tokens=12))
    w = LocalVLMWriter(model, batch_size=2)
    catalog = {"a": _png(tmp_path / "a.png", (200, 10, 10)), "b": _png(tmp_path / "b.png", (10, 10, 200))}
    uri, counts = instruct_pairs([_pair("p1"), _pair("p2")], w, catalog, str(tmp_path / "pairs"))
    assert type(model.model._model).__name__ == "LlavaForConditionalGeneration"
    assert len(model.texts) == 2 and all(isinstance(t, str) for t in model.texts)  # one batch of two
    valid = []
    for t in model.texts:
        try:
            valid.append(parse_content(t, 500).get("instruction") is not None)
        except BadReply:
            valid.append(None)
    assert counts["local_pairs"] == 2
    assert counts.get("local_failed", 0) == valid.count(None) == counts.get("chat_fallback", 0)
    assert counts.get("local_ok", 0) == 2 - valid.count(None)
    by_id = {p.pair_id: p for p in load_instructed(uri)}
    for pid, ok in zip(("p1", "p2"), valid):
        gen = by_id[pid].lineage.generators[-1].name if by_id[pid].instruction else None
        assert gen == ("local-vlm" if ok else "template" if ok is None else None)


class Scripted:
    folder = Path("scripted")

    def __init__(self, texts):
        self.texts, self.batches = list(texts), []

    def __call__(self, prompts):
        self.batches.append(len(prompts))
        assert all(len(ims) == 2 and ims[0].size == (24, 20) for _, ims in prompts)  # source and target
        return [self.texts.pop(0) for _ in prompts]


def test_generated_text_gets_the_chat_writers_validation_and_cap(tmp_path):
    src = io.BytesIO()
    Image.new("RGB", (24, 20), (1, 2, 3)).save(src, "PNG")
    texts = ['{"caption": "c", "instruction": "Make it blue"}', "gibberish",
             '```json\n{"instruction": "Paint {image} red."}\n```', '{"instruction": "' + "x" * 600 + '"}',
             '{"instruction": null}']
    model = Scripted(texts)
    w = LocalVLMWriter(model, batch_size=2, max_chars=500)
    out = list(w.write_many([(_pair(f"p{i}"), src.getvalue(), src.getvalue(), "png", "png") for i in range(5)]))
    assert model.batches == [2, 2, 1]
    assert out[0].instruction == "Make it blue in {image}." and out[0].caption == "c"
    assert out[0].writer == "local-vlm:scripted"
    assert isinstance(out[1], InstructionError) and "bad reply" in str(out[1])
    assert out[2].instruction == "Paint {image} red."
    assert isinstance(out[3], InstructionError) and "too long" in str(out[3])
    assert out[4] is None
    assert dict(w.counts) == {"local_pairs": 5, "local_ok": 3, "local_failed": 2, "local_bad_reply": 1,
                              "local_too_long": 1}


def test_the_backend_is_configurable_and_declares_a_gpu_when_asked(models_dir, tmp_path):
    from flows.pipelines import default_writer
    from schemas.config import RunConfig
    from stages.pairs.instruct import InstructStage

    ic = InstructionConfig(backend="local_vlm", local_model="vlm/tiny-llava", local_device="cuda")
    cfg = RunConfig(root=str(tmp_path / "run"), models_dir=str(models_dir))
    cfg = cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"instructions": ic})})
    spec = default_writer(cfg)
    assert spec["kind"] == "local_vlm" and spec["local_model"] == "vlm/tiny-llava"
    st = InstructStage(cfg, preset="general_editing", writer=spec)
    assert st.worker_resources().gpus == 1  # a model stage on GPU workers
    cpu = InstructStage(cfg, preset="general_editing", writer={**spec, "local_device": "cpu"})
    assert cpu.worker_resources().gpus == 0
    w = make_writer({**spec, "local_device": "cpu"}, cfg.root, cfg.models_dir)
    assert isinstance(w, LocalVLMWriter) and w.name == "local-vlm:tiny-llava" and w.model.device_pref == "cpu"
    with pytest.raises(ValueError, match="local_model"):
        make_writer({**spec, "local_model": ""}, cfg.root, cfg.models_dir)


def test_aceforge_models_lists_the_local_vlm_when_it_is_the_backend(models_dir, tmp_path):
    from mining.models.registry import model_status
    from schemas.config import RunConfig

    cfg = RunConfig(root=str(tmp_path / "run"), models_dir=str(models_dir))
    assert not any(m.name.startswith("local VLM") for m in model_status(cfg))
    for folder, present in (("vlm/tiny-llava", True), ("vlm/absent", False)):
        ic = InstructionConfig(backend="local_vlm", local_model=folder)
        named = cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"instructions": ic})})
        (m,) = [m for m in model_status(named) if m.name.startswith("local VLM")]
        assert m.present is present
