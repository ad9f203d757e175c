"""LoRA on the FLUX.1-Fill transformer, placed where the released ACE++ recipe puts it.

The recipe adapts the attention, MLP and modulation linears of every double block (image and text streams)
and of every single block, rank 64, alpha = rank. Embedders, `norm_out` and the final `proj_out` stay
untouched: their top-level names (`proj_out`, `norm_out.linear`) must not match, which is why the targets
are a regex anchored on the block prefix rather than bare suffixes (peft matches a list of suffixes at any
depth, so `proj_out` alone would also catch the final projection).

BFL fuses some of these linears: `img_attn.qkv` = to_q|to_k|to_v, `txt_attn.qkv` = add_q|add_k|add_v and a
single block's `linear1` = to_q|to_k|to_v|proj_mlp. The released recipe puts ONE rank-r LoRA on each fused
linear: a shared down projection A and one up projection whose rows split into the parts. `fused=True`
reproduces that here by tying the parts' lora_A to one parameter (each part keeps its own lora_B), which also
makes the kohya export dense: down = A, up = cat(B_parts). `fused=False` gives every part its own rank-r
LoRA (more parameters; the kohya export then needs a block-diagonal up).

Trap (diffusers 0.42): call `save_pretrained` on the base transformer BEFORE `add_lora`. After the adapter
is injected, the saved keys become `...base_layer.weight` and a reload silently re-initialises those layers.
Use `export.export_full` to write a transformer that carries an adapter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch

DOUBLE_PREFIX = "transformer_blocks"
SINGLE_PREFIX = "single_transformer_blocks"

# Module-name suffixes inside `transformer_blocks.N` (diffusers names; BFL name in the comment).
DOUBLE_TARGETS: tuple[str, ...] = (
    "attn.to_q", "attn.to_k", "attn.to_v",                  # img_attn.qkv
    "attn.to_out.0",                                         # img_attn.proj
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",  # txt_attn.qkv
    "attn.to_add_out",                                       # txt_attn.proj
    "ff.net.0.proj", "ff.net.2",                             # img_mlp.0, img_mlp.2
    "ff_context.net.0.proj", "ff_context.net.2",             # txt_mlp.0, txt_mlp.2
    "norm1.linear", "norm1_context.linear",                  # img_mod.lin, txt_mod.lin
)
# Module-name suffixes inside `single_transformer_blocks.N`.
SINGLE_TARGETS: tuple[str, ...] = (
    "attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp",      # linear1 (fused in BFL)
    "proj_out",                                              # linear2
    "norm.linear",                                           # modulation.lin
)
LORA_TARGETS: dict[str, tuple[str, ...]] = {DOUBLE_PREFIX: DOUBLE_TARGETS, SINGLE_PREFIX: SINGLE_TARGETS}
# Parts of one fused BFL linear (same input), in BFL row order.
FUSED_DOUBLE: tuple[tuple[str, ...], ...] = (("attn.to_q", "attn.to_k", "attn.to_v"),
                                             ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"))
FUSED_SINGLE: tuple[tuple[str, ...], ...] = (("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),)


def _alternation(suffixes: tuple[str, ...]) -> str:
    return "|".join(re.escape(s) for s in suffixes)


# peft full-matches a string `target_modules` against each module's whole name.
TARGET_REGEX = (rf"(?:{DOUBLE_PREFIX}\.\d+\.(?:{_alternation(DOUBLE_TARGETS)})"
                rf"|{SINGLE_PREFIX}\.\d+\.(?:{_alternation(SINGLE_TARGETS)}))")
_TARGET_RE = re.compile(TARGET_REGEX)


def is_lora_target(module_name: str) -> bool:
    return _TARGET_RE.fullmatch(module_name) is not None


def lora_target_names(transformer: torch.nn.Module) -> list[str]:
    """Names of the linears the recipe adapts, in module order (on a model without adapters)."""
    return [n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear) and is_lora_target(n)]


def lora_config(rank: int = 64, alpha: float | None = None, layout: "AdapterLayout | None" = None):
    """The ACE++ LoRA config: Kaiming-uniform A, zero B (the adapter starts as the identity; the released
    trainer's initialisation, peft's default), no dropout. `layout`: exactly these modules, each with its own
    rank and alpha (a released LoRA file's; `rank` and `alpha` are then ignored)."""
    from peft import LoraConfig

    if layout is not None:
        return LoraConfig(r=layout.rank, lora_alpha=layout.alpha, target_modules=layout.target_regex(),
                          rank_pattern=layout.rank_pattern(), alpha_pattern=layout.alpha_pattern(),
                          init_lora_weights=True, lora_dropout=0.0, bias="none")
    if rank <= 0:
        raise ValueError(f"rank must be positive, got {rank}")
    return LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), target_modules=TARGET_REGEX,
                      init_lora_weights=True, lora_dropout=0.0, bias="none")


class AdapterLayout:
    """Which modules carry a LoRA and each one's (rank, alpha): a released file's layout, module by module.

    `rank` / `alpha` are the most common values; peft's rank_pattern / alpha_pattern carry the exceptions,
    keyed by the escaped full module name (peft matches `(.*\\.)?(<key>)$`: a full name anchored at the
    start, so `transformer_blocks.0...` never matches `single_transformer_blocks.0...`).
    """

    def __init__(self, modules: dict[str, tuple[int, float]]):
        if not modules:
            raise ValueError("an adapter layout needs at least one module")
        self.modules = dict(modules)
        ranks = [r for r, _ in self.modules.values()]
        alphas = [a for _, a in self.modules.values()]
        self.rank = max(set(ranks), key=ranks.count)
        self.alpha = float(max(set(alphas), key=alphas.count))

    def target_regex(self) -> str:
        return "(?:" + "|".join(re.escape(n) for n in sorted(self.modules)) + ")"

    def rank_pattern(self) -> dict[str, int]:
        return {re.escape(n): r for n, (r, _) in self.modules.items() if r != self.rank}

    def alpha_pattern(self) -> dict[str, float]:
        return {re.escape(n): float(a) for n, (_, a) in self.modules.items() if float(a) != self.alpha}


def lora_layers(transformer: torch.nn.Module, adapter_name: str = "default") -> Iterator[tuple[str, torch.nn.Module]]:
    """(module name, peft LoraLayer) for every layer carrying `adapter_name`; DoRA and LoRA biases refused,
    since neither survives the kohya export."""
    from peft.tuners.lora import LoraLayer

    found = False
    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            if module.use_dora.get(adapter_name, False) or module.lora_bias.get(adapter_name, False):
                raise ValueError(f"{name}: DoRA / lora_bias adapters are not supported")
            found = True
            yield name, module
    if not found:
        raise ValueError(f"no LoRA adapter named {adapter_name!r} on this transformer")


def fused_groups(transformer: torch.nn.Module) -> Iterator[list[str]]:
    """Module names of every fused BFL linear's parts, block by block."""
    for prefix, groups in ((DOUBLE_PREFIX, FUSED_DOUBLE), (SINGLE_PREFIX, FUSED_SINGLE)):
        for i in range(len(getattr(transformer, prefix, ()))):
            for parts in groups:
                yield [f"{prefix}.{i}.{p}" for p in parts]


def tie_fused_lora(transformer: torch.nn.Module, adapter_name: str = "default") -> int:
    """Make the parts of each fused BFL linear share the first part's lora_A; returns the groups tied."""
    modules = dict(transformer.named_modules())
    tied = 0
    for names in fused_groups(transformer):
        layers = [modules.get(n) for n in names]
        if not all(layer is not None and adapter_name in getattr(layer, "lora_A", {}) for layer in layers):
            continue
        shared = layers[0].lora_A[adapter_name].weight
        for layer in layers[1:]:
            layer.lora_A[adapter_name].weight = shared
        tied += 1
    return tied


def add_lora(transformer: torch.nn.Module, rank: int = 64, alpha: float | None = None,
             adapter_name: str = "default", fused: bool = True, layout: AdapterLayout | None = None) -> int:
    """Inject a LoRA adapter (diffusers' `add_adapter`), freeze everything else; returns the trainable count.

    fused: one LoRA per fused BFL linear (shared lora_A), as released; see the module docstring.
    layout: exactly these modules with their own ranks and alphas (trainer/released.py), instead of the recipe's.
    Save the base transformer before calling this (see the module docstring).
    """
    transformer.requires_grad_(False)
    transformer.add_adapter(lora_config(rank, alpha, layout), adapter_name=adapter_name)
    if fused:
        tie_fused_lora(transformer, adapter_name)
    n_trainable = 0
    for name, param in transformer.named_parameters():  # a tied parameter is listed once
        is_lora = f".lora_A.{adapter_name}." in name or f".lora_B.{adapter_name}." in name
        param.requires_grad_(is_lora)
        n_trainable += param.numel() if is_lora else 0
    return n_trainable


def lora_delta(module: torch.nn.Module, adapter_name: str = "default") -> torch.Tensor:
    """scaling * B @ A in float32: the weight update one adapted linear applies, shape [out, in]."""
    a = module.lora_A[adapter_name].weight.detach().float()
    b = module.lora_B[adapter_name].weight.detach().float()
    return module.scaling[adapter_name] * (b @ a)
