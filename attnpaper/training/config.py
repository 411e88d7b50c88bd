"""The experiment's parameters: the paper's setup by default, every open choice named and recorded."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from ..attention import FEATURE_MAPS, FLASH_BACKENDS
from ..variants import VARIANTS
from .batches import LAYOUTS, bucket_range, chunk_for
from .step import STEP_MODES

SCHEDULES = ("linear", "constant")
SMOKE = {"model": "bert-tiny-random", "data": "synthetic", "max_length": 64, "epochs": 3,
         "train_samples": 512, "test_samples": 256, "lr": 2e-3}
"""A CPU smoke preset: the whole pipeline in seconds (a tiny random BERT on the synthetic corpus).

It learns (test accuracy 0.85-0.96 for every variant and seed 0-2; chance is 0.5), so a variant
whose attention is broken shows as a drop towards chance."""
PRECISIONS = ("bf16", "fp16", "fp32", "auto")
PACKED_VARIANTS = ("flash", "linear", "hybrid")
"""Variants that can run the packed (padding-free) layout: attnpaper's own attention function."""


@dataclass
class RunConfig:
    """One training run. Defaults: the paper (AdamW, lr 5e-5, batch 32, 3 epochs, 128 tokens, full IMDb)."""

    variant: str = "baseline"
    seed: int = 0
    model: str = "minilm-offline"
    data: str = "hub"
    max_length: int = 128
    epochs: float = 3
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.0  # open in the paper; transformers' Trainer default
    schedule: str = "linear"  # open in the paper; linear decay to 0, Trainer's default
    warmup_ratio: float = 0.0
    precision: str = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    attention_dropout: float = 0.0  # the varlen kernel and linear attention have none; so no variant uses it
    train_samples: int | None = None  # None = all 25,000
    test_samples: int | None = None
    max_steps: int | None = None  # stop after this many steps (shape benchmarks)
    eval: bool = True
    eval_batch_size: int = 128
    flash_backend: str = "auto"
    feature_map: str = "favor+"
    num_features: int | None = None
    redraw_every: int = 0
    hybrid_layers: int | None = None
    step_mode: str = "auto"  # captured (torch.compile + CUDA graphs) on a GPU, eager on a CPU; see attnpaper.training.step
    layout: str = "auto"  # flash: packed (padding-free end to end); the others: padded
    bucket: int | None = None  # static shapes: lengths (padded) or token counts (packed) rounded up to this; see packing
    max_grad_norm: float | None = None  # None: no clipping, as the paper's setup (Trainer's default is 1.0)
    checkpoint_every: int = 500  # save a resumable checkpoint every this many steps (and at each epoch end); 0: never
    nproc_per_node: int = 1  # >1: data-parallel over this many GPUs (torchrun + DDP), same global batch and lr
    notes: dict = field(default_factory=dict)

    def validate(self, model_max_positions: int | None = None, num_layers: int | None = None):
        """Raise ValueError naming the bad parameter and what is valid (types, finite ranges, choices)."""
        def bad(name, why):
            raise ValueError(f"bad parameter {name}={getattr(self, name)!r}: {why}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.seed) or self.seed < 0:
            bad("seed", "must be an int >= 0")
        for name in ("model", "data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                bad(name, "must be a non-empty string")
        for name in ("lr", "epochs", "weight_decay", "warmup_ratio", "attention_dropout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(name, "must be a finite number")
        if self.variant not in VARIANTS:
            bad("variant", f"valid: {', '.join(VARIANTS)}")
        for name in ("max_length", "batch_size", "eval_batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 2:
                bad(name, "must be an int >= 2")
        if model_max_positions is not None and self.max_length > model_max_positions:
            bad("max_length", f"the model has {model_max_positions} positions; valid: 2 to {model_max_positions}")
        if not self.lr > 0:
            bad("lr", "must be > 0")
        if not self.epochs > 0:
            bad("epochs", "must be > 0")
        if self.weight_decay < 0:
            bad("weight_decay", "must be >= 0")
        if not 0 <= self.warmup_ratio < 1:
            bad("warmup_ratio", "must be in [0, 1)")
        if not 0 <= self.attention_dropout < 1:
            bad("attention_dropout", "must be in [0, 1)")
        if self.attention_dropout > 0 and self.variant in ("linear", "hybrid"):
            bad("attention_dropout", "linear attention has no probability matrix to drop; valid here: 0")
        if not isinstance(self.eval, bool):
            bad("eval", "must be True or False")
        if self.max_grad_norm is not None and (isinstance(self.max_grad_norm, bool)
                                               or not isinstance(self.max_grad_norm, (int, float))
                                               or not math.isfinite(self.max_grad_norm) or self.max_grad_norm <= 0):
            bad("max_grad_norm", "must be None (no clipping) or a finite number > 0")
        if not is_int(self.nproc_per_node) or self.nproc_per_node < 1:
            bad("nproc_per_node", "must be an int >= 1 (1: one process, no DDP)")
        if self.batch_size % self.nproc_per_node:
            bad("nproc_per_node", f"must divide batch_size={self.batch_size} (each process takes an equal share)")
        if not is_int(self.checkpoint_every) or self.checkpoint_every < 0:
            bad("checkpoint_every", "must be an int >= 0 (0: no checkpoints)")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"valid: {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            bad("precision", f"valid: {', '.join(PRECISIONS)}")
        if self.flash_backend not in FLASH_BACKENDS:
            bad("flash_backend", f"valid: {', '.join(FLASH_BACKENDS)}")
        if self.feature_map not in FEATURE_MAPS:
            bad("feature_map", f"valid: {', '.join(FEATURE_MAPS)}")
        if self.num_features is not None and (not is_int(self.num_features) or self.num_features < 1):
            bad("num_features", "must be None (d log d) or an int >= 1")
        if not is_int(self.redraw_every) or self.redraw_every < 0:
            bad("redraw_every", "must be an int >= 0 (0: never redraw)")
        if self.hybrid_layers is not None:
            if self.variant != "hybrid":
                bad("hybrid_layers", f"applies to the hybrid variant only, not {self.variant!r}; valid here: None")
            top = num_layers if num_layers is not None else float("inf")
            if not is_int(self.hybrid_layers) or not 0 <= self.hybrid_layers <= top:
                bad("hybrid_layers", f"must be None or an int in [0, {num_layers if num_layers else 'layers'}]")
        if self.step_mode not in STEP_MODES:
            bad("step_mode", f"valid: {', '.join(STEP_MODES)}")
        if self.layout not in ("auto", *LAYOUTS):
            bad("layout", f"valid: auto, {', '.join(LAYOUTS)}")
        if self.layout == "packed" and self.variant not in PACKED_VARIANTS:
            bad("layout", "packed (padding-free) runs attnpaper's kernels only: variants "
                          f"{', '.join(PACKED_VARIANTS)}; valid here: auto, padded")
        layout = self.resolved_layout()
        _, low, high = bucket_range(layout, self.max_length)
        if self.bucket is not None and (not is_int(self.bucket) or not low <= self.bucket <= high):
            bad("bucket", f"must be None or an int in [{low}, {high}] "
                          f"({'token' if layout == 'packed' else 'length'} granularity)")
        chunk = chunk_for(self.variant, layout)
        if self.bucket is not None and self.bucket % chunk:
            bad("bucket", f"must be a multiple of {chunk} (packed linear attention's chunk)")
        if chunk > self.max_length:
            bad("max_length", f"must be >= {chunk} (packed linear attention's chunk) for the packed layout")
        for name in ("train_samples", "test_samples", "max_steps"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or v < 1):
                bad(name, "must be None or an int >= 1")
        if not isinstance(self.notes, dict):
            bad("notes", "must be a dict")
        return self

    def resolved_layout(self) -> str:
        """'packed' (padding-free end to end) for flash unless padded is asked for; 'padded' for the rest."""
        if self.layout == "auto":
            return "packed" if self.variant == "flash" else "padded"
        return self.layout

    def model_options(self) -> dict:
        """The build_model options this variant takes."""
        opts = {"attention_dropout": self.attention_dropout, "seed": self.seed}
        if self.variant in ("flash", "hybrid"):
            opts["flash_backend"] = self.flash_backend
        if self.variant in ("linear", "hybrid"):
            opts.update(feature_map=self.feature_map, num_features=self.num_features,
                        redraw_every=self.redraw_every)
        if self.variant == "hybrid":
            opts["hybrid_layers"] = self.hybrid_layers
        return opts

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Hash of everything that defines the experiment except variant and seed: runs that may share a table."""
        return hash_config(self.to_dict())

    @classmethod
    def from_parameters(cls, params: dict, smoke=False) -> "RunConfig":
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
    def from_dict(cls, d: dict) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**d)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}
NOT_HASHED = ("variant", "seed", "notes", "checkpoint_every")
"""Left out of the configuration hash: what a table row pools over, and what cannot change a result."""
HASHED_UNLESS_DEFAULT = {"max_grad_norm": None, "nproc_per_node": 1}
"""Fields added after records existed: at their default they leave the hash as it was."""


def hash_config(d: dict) -> str:
    """The configuration hash of a RunConfig dict (NOT_HASHED left out).

    Over the keys the dict has: a record written before a field existed keeps its hash.
    """
    d = {k: v for k, v in d.items() if k not in NOT_HASHED
         and not (k in HASHED_UNLESS_DEFAULT and v == HASHED_UNLESS_DEFAULT[k])}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
