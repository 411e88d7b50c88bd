"""The five attention variants and their options, in one table: what each runs, which options it takes,
how its batches are laid out, how the book names and colours it, where the paper's table had it, and the
valid values of every option. No torch: the command line's --help reads it, and every other floor (model
building, run parameters, checks, tables, figures, the answer box) asks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NOMASK = "nomask"
FLASH_BACKENDS = ("auto", "varlen", "flash_attn", "sdpa", "math", NOMASK)
"""Exact kernels: auto picks torch's varlen FlashAttention-2, else flash_attn's (both need sm80), else SDPA
with a dense block-diagonal mask (a fallback on a GPU, named in the record); math is SDPA's math backend.
nomask: SDPA on padded batches with no padding mask, so every layer attends the padding as keys (issue 39,
arm a): the only way PyTorch 2.0 and 2.1's SDPA flash kernel, which took no mask, could have run in the
paper (chapter 1). The flash variant in the padded layout only (``nomask_error``)."""
FEATURE_MAPS = ("favor+", "elu")
"""Linear attention's feature map: Performer FAVOR+ (positive random features) or elu(x)+1."""
LAYOUTS = ("padded", "packed")
"""padded: [B, L] rows with a mask; packed: the batch's real tokens in one row (padding-free)."""
MAX_FEATURES = 4096
"""The most random features per head: 16 times d log d for heads of 64 (FAVOR+'s default, 266). Memory grows
with features x tokens x heads, so 10**9 would take tens of GB before the first step."""
MAX_SEED = (2**63 - 1000) // 1000
"""The largest seed: each layer's features are seeded with seed * 1000 + layer, an int64."""


@dataclass(frozen=True)
class Variant:
    """One row of the table. implementation: the transformers attention implementation it runs under
    ("eager", "sdpa" or attnpaper's own); layers: what each encoder layer runs ("builtin" for
    transformers' own, else "exact", "linear" or "hybrid" = the first k exact, the rest linear);
    label: what the answer box calls it; color: its colour in every figure; paper: its row in the
    paper's table (0 first), None where the paper did not run it."""

    name: str
    implementation: str
    layers: str
    options: tuple[str, ...]
    layout: str
    dropout: bool
    doc: str
    label: str
    color: str
    paper: int | None

    def layer_plan(self, num_layers: int, hybrid_layers: int | None = None) -> list[str] | None:
        """'exact' or 'linear' per layer; None for transformers' own implementations."""
        if self.layers == "builtin":
            return None
        if self.layers != "hybrid":
            return [self.layers] * num_layers
        k = num_layers // 2 if hybrid_layers is None else hybrid_layers
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= num_layers:
            raise ValueError(f"bad option hybrid_layers={k!r}: must be None or an int in [0, {num_layers}]")
        return ["exact"] * k + ["linear"] * (num_layers - k)


ATTNPAPER = "attnpaper"  # the name attnpaper's attention registers under in transformers (attention.plug.ATTN_NAME)
COMMON = ("attention_dropout", "seed")
EXACT = ("flash_backend",)
LINEAR = ("feature_map", "num_features", "redraw_every")
# colours: Okabe-Ito (safe for the common colour-vision deficiencies), one per variant, used by every figure
TABLE = {
    v.name: v
    for v in (
        Variant(
            "baseline",
            "eager",
            "builtin",
            COMMON,
            "padded",
            True,
            "eager softmax, as DistilBERT computes it (transformers' eager attention)",
            label="eager softmax",
            color="#0072B2",  # blue
            paper=0,
        ),
        Variant(
            "sdpa",
            "sdpa",
            "builtin",
            COMMON,
            "padded",
            True,
            "transformers' default: torch's scaled_dot_product_attention with a padding mask",
            label="transformers' default",
            color="#56B4E9",  # sky blue
            paper=None,
        ),
        Variant(
            "flash",
            ATTNPAPER,
            "exact",
            COMMON + EXACT,
            "packed",
            True,
            "exact attention through fused kernels in every layer, padding-free end to end",
            label="FlashAttention, padding-free",
            color="#009E73",  # green
            paper=1,
        ),
        Variant(
            "linear",
            ATTNPAPER,
            "linear",
            COMMON + LINEAR,
            "packed",
            False,
            "FAVOR+ (or elu+1) linear attention in every layer, padding-free end to end",
            label="Performer FAVOR+",
            color="#D55E00",  # vermillion
            paper=2,
        ),
        Variant(
            "hybrid",
            ATTNPAPER,
            "hybrid",
            COMMON + EXACT + LINEAR + ("hybrid_layers",),
            "packed",
            False,
            "the first k layers flash, the rest linear, padding-free end to end",
            label="flash early, linear late",
            color="#CC79A7",  # reddish purple
            paper=3,
        ),
    )
}
VARIANTS = tuple(TABLE)
"""baseline, sdpa, flash, linear, hybrid (see TABLE): the order of every table and figure."""
PAPER_ORDER = tuple(sorted((v.name for v in TABLE.values() if v.paper is not None), key=lambda n: TABLE[n].paper))
"""baseline, flash, linear, hybrid: the variants the paper ran, in the order its table (and its notebook) had them."""
OPTIONS = ("attention_dropout", "flash_backend", "feature_map", "num_features", "redraw_every", "hybrid_layers", "seed")
"""Every option build_model takes; each variant takes those in its row."""


def default_num_features(head_dim: int) -> int:
    """FAVOR+'s random features per head when num_features is None: d log d (Performer's choice), rounded;
    111 for MiniLM's heads of 32, 266 for DistilBERT's 64. Every layer and the campaign's 4x arm use it."""
    return int(round(head_dim * math.log(head_dim)))


def nomask_error(variant: str, layout: str) -> str | None:
    """Why flash_backend='nomask' cannot run for ``variant`` in ``layout`` (one phrase naming what is valid),
    or None when it can. Attended padding is an arm of the flash variant alone (hybrid's linear layers would
    still mask it) and needs padded batches (a packed batch holds no padding to attend)."""
    if TABLE[variant].layers != "exact":
        others = ", ".join(b for b in FLASH_BACKENDS if b != NOMASK)
        return f"it is an arm of the flash variant, not of {variant!r}; valid: variant='flash', or {others}"
    if layout != "padded":
        return f"it attends the padding of padded batches, and {layout} ones hold none; valid with it: layout='padded'"
    return None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def option_error(name: str, value) -> str | None:
    """Why ``value`` is not valid for option ``name`` (one phrase naming what is), or None when it is."""
    if name == "attention_dropout":
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < 1
        return None if ok else "must be a number in [0, 1)"
    if name == "flash_backend":
        return None if value in FLASH_BACKENDS else f"valid: {', '.join(FLASH_BACKENDS)}"
    if name == "feature_map":
        return None if value in FEATURE_MAPS else f"valid: {', '.join(FEATURE_MAPS)}"
    if name == "num_features":
        ok = value is None or (_is_int(value) and 1 <= value <= MAX_FEATURES)
        return None if ok else f"must be None (d log d) or an int from 1 to {MAX_FEATURES}"
    if name == "redraw_every":
        return None if _is_int(value) and value >= 0 else "must be an int >= 0 (0: never redraw)"
    if name == "hybrid_layers":
        return None if value is None or (_is_int(value) and value >= 0) else "must be None (half) or an int >= 0"
    if name == "seed":
        ok = _is_int(value) and 0 <= value <= MAX_SEED
        return None if ok else f"must be an int in [0, {MAX_SEED}] (layers are seeded with seed * 1000 + layer)"
    raise KeyError(name)


def variant(name) -> Variant:
    """The table row of ``name``, or ValueError naming the valid variants."""
    if name not in TABLE:
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(TABLE)}")
    return TABLE[name]


def in_order(names) -> list[str]:
    """The distinct ``names`` in the table's order, then any the table does not know, sorted: a record of a
    variant from another branch still shows, after the known ones."""
    names = set(names)
    return [v for v in TABLE if v in names] + sorted(names - set(TABLE), key=str)


def check_options(name: str, options: dict) -> Variant:
    """Validate build_model's options for variant ``name``: known, taken by this variant, valid values.

    An option the variant does not take is refused (it would be silently ignored), except at its
    default value, so one set of run parameters can serve every variant.
    """
    row = variant(name)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    for key, value in options.items():
        why = option_error(key, value)
        if why:
            raise ValueError(f"bad option {key}={value!r}: {why}")
        if key not in row.options and value != DEFAULTS[key]:
            raise ValueError(
                f"option {key}={value!r} does not apply to variant {name!r}, which takes: {', '.join(row.options)}"
            )
    why = nomask_error(name, "padded") if options.get("flash_backend") == NOMASK else None
    if why:
        raise ValueError(f"bad option flash_backend={NOMASK!r}: {why}")
    if options.get("attention_dropout", 0) > 0 and not row.dropout:
        raise ValueError(
            f"bad option attention_dropout={options['attention_dropout']!r}: linear attention has "
            f"no probability matrix to drop; valid for {name!r}: 0"
        )
    return row


DEFAULTS = {
    "attention_dropout": 0.0,
    "flash_backend": "auto",
    "feature_map": "favor+",
    "num_features": None,
    "redraw_every": 0,
    "hybrid_layers": None,
    "seed": 0,
}

OFFLINE_MODEL = "minilm-offline"
RANDOM_DISTILBERT = "distilbert-base-random"
TINY_RANDOM = "bert-tiny-random"
TINY_ROBERTA = "roberta-tiny-random"
RANDOM_ALIASES = (RANDOM_DISTILBERT, TINY_RANDOM, TINY_ROBERTA)
"""The aliases with random weights and no tokenizer of their own (they take MiniLM's, or $ATTNPAPER_TOKENIZER)."""
MODEL_ALIASES = (OFFLINE_MODEL, *RANDOM_ALIASES)
"""Model names that need no hub: the packaged all-MiniLM-L6-v2, a random DistilBERT-base, and a tiny
random BERT and RoBERTa (2 layers, hidden 64) for smoke runs; all use the uncased 30,522-token vocabulary."""
