"""FLUX.1-Fill components: loaded from a local diffusers-format folder (safetensors only), or built tiny
with random weights for tests and the offline demo.

The tiny build uses the real architectures (FluxTransformer2DModel with 384 input channels, a FLUX-style
AutoencoderKL with 16 latent channels, CLIP and T5 text encoders) at toy sizes; it is saved and loaded
through exactly the path real weights take. Its name, `tiny-random-flux-fill`, goes into every record.

Both get the released ACE++ image identifiers (`{image}`, `{image1}` ...) as added T5 tokens, in the released
config's order (`ADDED_IDENTIFIER`): each becomes one token instead of a string of characters. FLUX's T5 has
32,100 tokens and 32,128 embedding rows, so they take existing rows 32,100..32,113 and no resize is needed.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import torch

from schemas.layout import TINY_BASE

TINY_NAME = TINY_BASE
# x_embedder input channels per token. FLUX.1-Fill: noisy latent (64) + masked-image latent (64) + mask (256).
# The released ACE++ full fine-tune (`FluxMRModiACEPlus`, IN_CHANNELS 448) inserts the packed latent of the
# "modify" image (the source pixels under the mask, source * mask) between the masked-image latent and the
# mask: see trainer/packing.py `fill_condition`.
FILL_IN_CHANNELS = 384
FFT_IN_CHANNELS = 448
IN_CHANNELS = (FILL_IN_CHANNELS, FFT_IN_CHANNELS)
# The released training configs' T5 ADDED_IDENTIFIER list, in its order (token ids follow it).
IDENTIFIERS = ("<img>", "{image}", "{caption}", "{mask}", "{ref_image}", "{image1}", "{image2}", "{image3}",
               "{image4}", "{image5}", "{image6}", "{image7}", "{image8}", "{image9}")
PIPELINE_PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode map (printable bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


@lru_cache(maxsize=1)
def clip_bpe() -> tuple[dict[str, int], list[str]]:
    """The CLIP BPE vocabulary (49,408 tokens) rebuilt from the merges file shipped inside open_clip."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    base = list(_bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def tiny_clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe()
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=77)


def tiny_t5_tokenizer(max_length: int = 64):
    """A small unigram vocabulary (letters, digits, punctuation, whole common words) standing in for T5's."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    words = ["the", "a", "of", "and", "to", "in", "image", "make", "add", "remove", "change", "into", "with"]
    pieces += [(f"▁{w}", -2.0) for w in words]
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-(){}[]/"
    pieces += [(f"▁{c}", -6.0) for c in chars] + [(c, -5.0) for c in chars] + [("▁", -3.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def add_identifiers(pipe):
    """Add IDENTIFIERS to the T5 tokenizer as special tokens (a no-op when present); the T5 encoder must hold
    an embedding row for each. A model short of rows gets zero rows appended (never the case for FLUX's T5)."""
    tok, enc = pipe.tokenizer_2, pipe.text_encoder_2
    missing = [t for t in IDENTIFIERS if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens(missing, special_tokens=True)
    rows = enc.get_input_embeddings().weight.shape[0]
    if len(tok) > rows:
        enc.resize_token_embeddings(len(tok), mean_resizing=False)
        with torch.no_grad():
            enc.get_input_embeddings().weight[rows:] = 0
    return pipe


def tiny_transformer_config(in_channels: int = FILL_IN_CHANNELS) -> dict:
    """The toy transformer's constructor arguments (FluxTransformer2DModel's config keys)."""
    return dict(patch_size=1, in_channels=in_channels, out_channels=64, num_layers=1, num_single_layers=1,
                attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32, pooled_projection_dim=32,
                guidance_embeds=True, axes_dims_rope=[4, 6, 6])


def build_tiny_pipeline(seed: int = 0, in_channels: int = FILL_IN_CHANNELS):
    """A whole FluxFillPipeline of toy size with random weights (seeded). `in_channels` 448: the released full
    fine-tune's input layout (FFT_IN_CHANNELS) instead of FLUX.1-Fill's 384."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    if in_channels not in IN_CHANNELS:
        raise ValueError(f"in_channels must be one of {IN_CHANNELS}, got {in_channels}")
    transformer = FluxTransformer2DModel(**tiny_transformer_config(in_channels))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4,
        sample_size=64, shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False)
    clip_tok = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tok), hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=32, bos_token_id=clip_tok.bos_token_id,
        eos_token_id=clip_tok.eos_token_id, pad_token_id=clip_tok.pad_token_id))
    t5_tok = tiny_t5_tokenizer()
    t5_tok.add_tokens(list(IDENTIFIERS), special_tokens=True)
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
        decoder_start_token_id=0, pad_token_id=t5_tok.pad_token_id))
    for m in (transformer, vae, text_encoder, text_encoder_2):
        m.eval()  # as from_pretrained leaves them: no dropout
    return FluxFillPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                            tokenizer=clip_tok, text_encoder_2=text_encoder_2, tokenizer_2=t5_tok,
                            transformer=transformer)


def save_pipeline(pipe, folder: str | Path) -> Path:
    """Save in diffusers' folder layout with safetensors (what FLUX.1-Fill-dev ships)."""
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def load_pipeline(folder: str | Path, dtype: torch.dtype = torch.float32):
    """A FluxFillPipeline from a local diffusers-format folder; safetensors only, nothing from a hub."""
    from diffusers import FluxFillPipeline

    folder = Path(folder)
    missing = [p for p in PIPELINE_PARTS if not (folder / p).is_dir()]
    if missing or not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder} is not a diffusers FLUX.1-Fill folder: missing "
                                f"{', '.join(missing) or 'model_index.json'} (expected black-forest-labs/"
                                f"FLUX.1-Fill-dev's layout)")
    pickled = [p for p in folder.rglob("*.bin") if p.parent.name in PIPELINE_PARTS]
    if pickled:
        raise ValueError(f"refusing pickled weights {pickled[0]}: convert them to safetensors")
    check_in_channels(transformer_config(folder)["in_channels"], folder)
    pipe = FluxFillPipeline.from_pretrained(folder, dtype=dtype, use_safetensors=True, local_files_only=True)
    return add_identifiers(pipe)


def transformer_config(folder: str | Path) -> dict:
    """A diffusers base folder's transformer/config.json (no weights read)."""
    import json

    from diffusers.utils import CONFIG_NAME  # diffusers' own name for a model folder's config

    path = Path(folder) / "transformer" / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected black-forest-labs/FLUX.1-Fill-dev's layout)")
    return json.loads(path.read_text())


def check_in_channels(in_channels: int, where) -> int:
    if in_channels not in IN_CHANNELS:
        raise ValueError(f"{where}: the transformer takes {in_channels} input channels; known layouts: "
                         f"{FILL_IN_CHANNELS} (FLUX.1-Fill) and {FFT_IN_CHANNELS} (the released ACE++ full "
                         f"fine-tune)")
    return in_channels


def empty_transformer(config: dict):
    """A FluxTransformer2DModel of `config` on the meta device: module names and shapes, no memory."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    with init_empty_weights():
        return FluxTransformer2DModel.from_config(config)
