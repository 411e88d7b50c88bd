"""The experiment's parameters, defined once: each field's default (the paper's setup), what it means and
its valid range live together below; validation, the notebook's parameters cell and chapter 3's table
are all checked against this one list (tests/test_config.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field

from .. import variants as V
from ..attention.exact import KERNEL_SETS
from ..variants import LAYOUTS, VARIANTS
from .batches import bucket_range, chunk_for
from .step import STEP_MODES

PADDINGS = ("static", "dynamic")
"""How a run's padded batches are shaped (RunConfig.padding): to buckets and full batches, or each to itself."""

SCHEDULES = ("linear", "constant")
SMOKE = {
    "model": "bert-tiny-random",
    "data": "synthetic",
    "max_length": 64,
    "epochs": 3,
    "train_samples": 512,
    "test_samples": 256,
    "lr": 2e-3,
}
"""A CPU smoke preset: the whole pipeline in seconds (a tiny random BERT on the synthetic corpus).

It learns (test accuracy 0.85-0.96 for every variant and seed 0-2; chance is 0.5), so a variant
whose attention is broken shows as a drop towards chance."""
PRECISIONS = ("bf16", "fp16", "fp32", "auto")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def choice(*values):
    return lambda v: None if v in values else f"valid: {', '.join(map(str, values))}"


def integer(low, high=None, none=None):
    """An int in [low, high]; ``none`` (a phrase) when None is valid too."""

    def check(v):
        if v is None and none:
            return None
        if _int(v) and v >= low and (high is None or v <= high):
            return None
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        return f"must be {'None (' + none + ') or ' if none else ''}an int {rng}"

    return check


def number(low=None, high=None, low_open=False, high_open=True, none=None):
    """A finite number in its range; ``none`` (a phrase) when None is valid too."""

    def check(v):
        if v is None and none:
            return None
        if not _num(v):
            return f"must be {'None (' + none + ') or ' if none else ''}a finite number"
        if low is not None and (v <= low if low_open else v < low):
            return f"must be {'>' if low_open else '>='} {low:g}"
        if high is not None and (v >= high if high_open else v > high):
            return f"must be {'<' if high_open else '<='} {high:g}"
        return None

    return check


def text(v):
    return None if isinstance(v, str) and v else "must be a non-empty string"


def boolean(v):
    return None if isinstance(v, bool) else "must be True or False"


def option(name):
    return lambda v: V.option_error(name, v)


def param(default, doc, check, **kw):
    """A RunConfig field with its meaning and its check (a function: value -> why it is invalid, or None)."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"doc": doc, "check": check})
    return field(default=default, metadata={"doc": doc, "check": check}, **kw)


@dataclass
class RunConfig:
    """One training run. Defaults: the paper (AdamW, lr 5e-5, batch 32, 3 epochs, 128 tokens, full IMDb)."""

    variant: str = param("baseline", "attention variant", choice(*VARIANTS))
    seed: int = param(0, "seed of the weights' head, data order, dropout and random features", option("seed"))
    model: str = param("minilm-offline", "hub name, local directory or alias (see MODEL_ALIASES)", text)
    data: str = param("hub", "IMDb: 'hub', a parquet folder, a token cache (.npz) or 'synthetic'", text)
    max_length: int = param(128, "tokens per review (longer ones are cut)", integer(8))
    epochs: float = param(
        3, "passes over the training split (fractions allowed: at least one step)", number(0, low_open=True)
    )
    batch_size: int = param(32, "reviews per optimizer step (all processes together)", integer(2))
    lr: float = param(5e-5, "AdamW's peak learning rate", number(0, low_open=True))
    weight_decay: float = param(0.0, "AdamW's decoupled weight decay (open in the paper; Trainer's default)", number(0))
    schedule: str = param(
        "linear", "learning-rate schedule: linear decay to 0 (Trainer's default) or constant", choice(*SCHEDULES)
    )
    warmup_ratio: float = param(0.0, "share of the steps spent warming the learning rate up", number(0, 1))
    precision: str = param(
        "auto",
        "autocast; auto: bf16 on a GPU of sm80+, fp16 with a gradient scaler before, fp32 on a CPU",
        choice(*PRECISIONS),
    )
    attention_dropout: float = param(
        0.0,
        "dropout on attention probabilities (the varlen kernel and linear attention have none, so no variant uses it)",
        option("attention_dropout"),
    )
    train_samples: int | None = param(None, "training reviews (None: all 25,000)", integer(1, none="all"))
    test_samples: int | None = param(None, "test reviews (None: all 25,000)", integer(1, none="all"))
    max_steps: int | None = param(None, "stop after this many steps (shape benchmarks)", integer(1, none="no limit"))
    eval: bool = param(True, "score the test split after training", boolean)
    eval_batch_size: int = param(128, "reviews per evaluation batch", integer(1))
    flash_backend: str = param(
        "auto",
        "exact kernel of flash and hybrid (nomask: flash on padded batches of max_length, padding attended)",
        option("flash_backend"),
    )
    feature_map: str = param("favor+", "linear attention's feature map", option("feature_map"))
    num_features: int | None = param(None, "random features of FAVOR+ (None: d log d)", option("num_features"))
    redraw_every: int = param(0, "redraw FAVOR+ features every this many steps (0: never)", option("redraw_every"))
    hybrid_layers: int | None = param(
        None, "hybrid: how many leading layers are flash (None: half)", option("hybrid_layers")
    )
    step_mode: str = param(
        "auto",
        "how a step runs: auto is whole (one CUDA graph per step) on a GPU, eager on a "
        "CPU (see attnpaper.training.step)",
        choice(*STEP_MODES),
    )
    layout: str = param(
        "auto", "batches: padded, or packed (padding-free); auto: the variant's default", choice("auto", *LAYOUTS)
    )
    bucket: int | None = param(
        None, "static shapes: lengths (padded) or token counts (packed) rounded up to this", lambda v: None
    )  # its range depends on the layout: checked below
    padding: str = param(
        "static",
        "static: batches padded to buckets and to full batches (a recorded step replays them); dynamic: each "
        "batch padded to its own longest review, as DataCollatorWithPadding (padded layout, eager steps)",
        choice(*PADDINGS),
    )
    kernel_set: str = param(
        "auto",
        "kernels chosen as on: auto, this GPU; sm75, the paper's T4 (SDPA's memory-efficient or math kernel, "
        "no FlashAttention-2 or cuDNN attention, no bf16: auto precision is fp16 with a gradient scaler)",
        choice(*KERNEL_SETS),
    )
    max_grad_norm: float | None = param(
        None,
        "clip gradients to this norm (None: no clipping, as the paper; Trainer's default is 1.0)",
        number(0, low_open=True, none="no clipping"),
    )
    checkpoint_every: int = param(
        500, "save a resumable checkpoint every this many steps and at each epoch end (0: never)", integer(0)
    )
    nproc_per_node: int = param(
        1, ">1: data-parallel over this many GPUs (torchrun + DDP), same global batch and lr", integer(1)
    )
    notes: dict = param(
        {},
        "free-form notes kept in the record (not hashed)",
        lambda v: None if isinstance(v, dict) else "must be a dict",
    )

    def validate(self, model_max_positions: int | None = None, num_layers: int | None = None):
        """Raise ValueError naming the bad parameter and what is valid (types, finite ranges, choices)."""

        def bad(name, why):
            raise ValueError(f"bad parameter {name}={getattr(self, name)!r}: {why}")

        for f in dataclasses.fields(self):
            why = f.metadata["check"](getattr(self, f.name))
            if why:
                bad(f.name, why)
        # what depends on more than one field
        row = V.TABLE[self.variant]
        if model_max_positions is not None and self.max_length > model_max_positions:
            bad("max_length", f"the model has {model_max_positions} positions; valid: 8 to {model_max_positions}")
        if self.attention_dropout > 0 and not row.dropout:
            bad("attention_dropout", "linear attention has no probability matrix to drop; valid here: 0")
        if self.batch_size % self.nproc_per_node:
            bad("nproc_per_node", f"must divide batch_size={self.batch_size} (each process takes an equal share)")
        if self.hybrid_layers is not None:
            if "hybrid_layers" not in row.options:
                bad("hybrid_layers", f"applies to the hybrid variant only, not {self.variant!r}; valid here: None")
            if num_layers is not None and self.hybrid_layers > num_layers:
                bad("hybrid_layers", f"must be None or an int in [0, {num_layers}]")
        if self.layout == "packed" and self.variant not in PACKED:
            bad("layout", f"packed (padding-free) batches run {', '.join(PACKED)} only; valid here: auto, padded")
        layout = self.resolved_layout()
        if self.flash_backend == V.NOMASK:
            self._check_nomask(layout, bad)
        self._check_t4_setup(layout, bad)
        chunk = chunk_for(self.variant, layout, self.max_length)
        if self.bucket is not None and self.bucket % chunk:
            bad("bucket", f"must be a multiple of {chunk} (packed linear attention's chunk)")
        _, low, high = bucket_range(layout, self.max_length)
        if self.bucket is not None and (not _int(self.bucket) or not low <= self.bucket <= high):
            bad(
                "bucket",
                f"must be None or an int in [{low}, {high}] "
                f"({'token' if layout == 'packed' else 'length'} granularity)",
            )
        return self

    def _check_nomask(self, layout: str, bad) -> None:
        """flash_backend='nomask' (issue 39's arm a): the flash variant on padded batches, every one padded to
        max_length. The padding is attended, so how much of it a batch holds is part of the model: a bucket
        other than max_length would change the computation with the batch's longest review."""
        why = V.nomask_error(self.variant, layout)
        if why:
            bad("flash_backend", why)
        if self.bucket not in (None, self.max_length):
            bad("bucket", f"flash_backend='nomask' pads every batch to max_length; valid: None or {self.max_length}")

    def _check_t4_setup(self, layout: str, bad) -> None:
        """padding='dynamic' and kernel_set='sm75' (issue 39: the setup a T4 user had), against what they
        cannot run with: a recorded or compiled step (it would replay one shape or recompile for each), packed
        batches, a padding that nomask fixes; bf16 and FlashAttention-2 on a T4's kernels."""
        if self.padding == "dynamic":
            if layout != "padded":
                bad("padding", f"dynamic pads [B, N] batches; the {self.variant} run is {layout}: set layout padded")
            if self.step_mode != "eager":
                bad("padding", "dynamic gives every batch its own shape; valid with step_mode eager only, else static")
            if self.flash_backend == V.NOMASK:
                bad("padding", "flash_backend='nomask' pads every batch to max_length; valid: static")
        if self.kernel_set == "sm75":
            if self.precision == "bf16":
                bad("precision", "kernel_set='sm75' (a T4) has no native bf16; valid: auto (fp16 there), fp16, fp32")
            if self.flash_backend in ("varlen", "flash_attn"):
                bad("flash_backend", "kernel_set='sm75' (a T4) has no FlashAttention-2; valid: auto, sdpa, math")

    def pads_to_max_length(self) -> bool:
        """True when every batch, evaluation's too, must be padded to max_length: flash_backend='nomask' attends
        the padding, so a shorter padding would be another input than the one the model was trained on."""
        return self.flash_backend == V.NOMASK

    def resolved_layout(self) -> str:
        """The layout asked for, or the variant's default (variants.TABLE) when auto."""
        return V.TABLE[self.variant].layout if self.layout == "auto" else self.layout

    def model_options(self) -> dict:
        """The build_model options this variant takes (variants.TABLE), with this run's values."""
        return {name: getattr(self, name) for name in V.TABLE[self.variant].options}

    @staticmethod
    def describe() -> list[dict]:
        """Every parameter: name, default and meaning (the notebook's parameters cell and chapter 3 use it)."""
        return [
            {
                "name": f.name,
                "default": f.default if f.default is not dataclasses.MISSING else {},
                "doc": f.metadata["doc"],
            }
            for f in dataclasses.fields(RunConfig)
        ]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hashed_dict(self) -> dict:
        """to_dict(), plus ``tokenizer`` where $ATTNPAPER_TOKENIZER replaces a random-init model's default
        one (tokenizer_override): what a record keeps as its "config", and what config_hash covers."""
        tokenizer = tokenizer_override(self.model)
        return self.to_dict() | ({"tokenizer": tokenizer} if tokenizer else {})

    def config_hash(self) -> str:
        """Hash of everything that defines the experiment except variant and seed: runs that may share a table."""
        return hash_config(self.hashed_dict())

    @classmethod
    def from_parameters(cls, params: dict, smoke=False) -> RunConfig:
        """The configuration of a notebook run (papermill parameters), validated.

        A preset parameter (those in SMOKE) left as None takes the smoke preset's value when
        ``smoke``, else the paper's default; data left as None is $ATTNPAPER_IMDB or the hub.
        Any value given explicitly wins over both.
        """
        from .data import default_source

        preset = SMOKE if smoke else {}
        filled = {}
        for name, value in params.items():
            if value is None and name in SMOKE:
                value = preset.get(name, default_source() if name == "data" else _DEFAULTS[name])
            filled[name] = value
        return cls.from_dict(filled).validate()

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**d)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}
TOKENIZER_ENV = "ATTNPAPER_TOKENIZER"
"""A tokenizer folder for the random-init models (default: the packaged MiniLM's, where it is present)."""
RANDOM_INIT = V.RANDOM_ALIASES
"""The model aliases with no tokenizer of their own (attnpaper.model.build.resolve_model)."""


def tokenizer_override(model) -> str | None:
    """The folder of $ATTNPAPER_TOKENIZER when it is set and ``model`` is a random-init alias, else None (the
    model's own tokenizer, or a random-init model's default): a run's tokenization depends on it."""
    return (os.environ.get(TOKENIZER_ENV) or None) if model in RANDOM_INIT else None


PACKED = tuple(n for n, v in V.TABLE.items() if v.implementation == V.ATTNPAPER)
"""Variants that can run on packed (padding-free) batches: those running attnpaper's own attention."""
NOT_HASHED = ("variant", "seed", "notes", "checkpoint_every")
"""Left out of the configuration hash: what a table row pools over, and what cannot change a result."""
HASHED_UNLESS_DEFAULT = {"max_grad_norm": None, "nproc_per_node": 1, "padding": "static", "kernel_set": "auto"}
"""Fields added after records existed: at their default they leave the hash as it was."""


def hash_config(d: dict) -> str:
    """The configuration hash of a RunConfig dict (NOT_HASHED left out).

    Over the keys the dict has: a record written before a field existed keeps its hash.
    """
    d = {
        k: v
        for k, v in d.items()
        if k not in NOT_HASHED and not (k in HASHED_UNLESS_DEFAULT and v == HASHED_UNLESS_DEFAULT[k])
    }
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
