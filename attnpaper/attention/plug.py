"""Plugging the kernels into transformers through its extension points.

One attention function and one mask function are registered under the name ``attnpaper``
(``AttentionInterface`` / ``AttentionMaskInterface``; the name must not contain "flash", or
transformers takes it for its own flash-attn kernels). The mask function hands every layer the
plain 2D padding mask, so no [B, 1, N, N] bias is built. Each attention module carries a small
``LayerAttention`` submodule saying which kernel that layer runs (exact or linear) and keeping
the layer's random features; the attention function dispatches on it, and on the batch's layout:
a packed batch (training.batches.packed_forward) sends its exact layers to the varlen kernel and
its linear layers to the chunked per-sequence sums of ``packed_linear_attention``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from ..variants import ATTNPAPER, FEATURE_MAPS, default_num_features
from .exact import FLASH_BACKENDS, exact_attention, varlen_attention
from .linear import elu_features, favor_features, linear_attention, orthogonal_gaussian, packed_linear_attention

ATTN_NAME = ATTNPAPER  # the name this attention registers under in transformers (variants.TABLE uses it)
LAYER_KINDS = ("exact", "linear")
PACKED_KWARGS = frozenset(("cu_seq_lens_k", "max_length_q", "max_length_k", "chunk_seq", "segments", "key_mask"))
"""The attention kwargs a packed batch brings besides cu_seq_lens_q (training.batches.packed_forward)."""


class LayerAttention(nn.Module):
    """Per-layer settings of the attnpaper attention function, and the kernels it ran."""

    def __init__(
        self, kind, head_dim, flash_backend="auto", feature_map="favor+", num_features=None, redraw_every=0, seed=0
    ):
        super().__init__()
        if kind not in LAYER_KINDS:
            raise ValueError(f"unknown layer kind {kind!r}; valid: {', '.join(LAYER_KINDS)}")
        if flash_backend not in FLASH_BACKENDS:
            raise ValueError(f"unknown flash_backend {flash_backend!r}; valid: {', '.join(FLASH_BACKENDS)}")
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"unknown feature_map {feature_map!r}; valid: {', '.join(FEATURE_MAPS)}")
        if num_features is None:  # Performer's default: d log d
            num_features = default_num_features(head_dim)
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if not isinstance(redraw_every, int) or redraw_every < 0:
            raise ValueError(f"redraw_every must be an int >= 0 (0 = never), got {redraw_every!r}")
        self.kind, self.flash_backend, self.feature_map = kind, flash_backend, feature_map
        self.num_features, self.redraw_every, self.head_dim = num_features, redraw_every, head_dim
        self.generator = torch.Generator().manual_seed(seed)
        self.kernels: set[str] = set()
        self.since_redraw = 0  # training forwards since the schedule last ran (count_training_forward)
        # [M, D] FAVOR+ projection, saved with the model (a reloaded model computes the same features)
        proj = orthogonal_gaussian(num_features, head_dim, self.generator) if self._favor else torch.empty(0)
        self.register_buffer("proj", proj, persistent=self._favor)

    @property
    def _favor(self):
        return self.kind == "linear" and self.feature_map == "favor+"

    def redraw(self):
        """Draw a fresh FAVOR+ projection from this layer's generator (in place: a captured graph sees it)."""
        self.proj.copy_(orthogonal_gaussian(self.num_features, self.head_dim, self.generator))

    @property
    def redraws(self) -> bool:
        """True when this layer draws new FAVOR+ features during training."""
        return self._favor and self.redraw_every > 0

    def redraw_at(self, step: int) -> bool:
        """Before training step ``step``: redraw if ``redraw_every`` divides it (never at step 0). A loop
        that calls this owns the schedule, so the forward's own count starts again."""
        self.since_redraw = 0
        if self.redraws and step and step % self.redraw_every == 0:
            self.redraw()
            return True
        return False

    def count_training_forward(self) -> None:
        """One training forward of an uncompiled model that no loop schedules (``transformers.Trainer``):
        redraw before every ``redraw_every``-th, as ``redraw_at`` would before that step. It counts
        forwards, so with gradient accumulation pass ``attnpaper.training.trainer.RedrawFeatures`` to the
        Trainer instead, which counts optimizer steps."""
        if self.redraws:
            if self.since_redraw == self.redraw_every:
                self.redraw()
                self.since_redraw = 0
            self.since_redraw += 1

    def extra_repr(self):
        if self.kind == "exact":
            return f"kind=exact, flash_backend={self.flash_backend}"
        extra = f", num_features={self.num_features}, redraw_every={self.redraw_every}" if self._favor else ""
        return f"kind=linear, feature_map={self.feature_map}{extra}"


def redraw_features(model, step: int) -> int:
    """Before training step ``step``: redraw FAVOR+ features in the layers whose ``redraw_every`` divides it.

    Called by the training loop, outside the forward pass, so a compiled or captured step never
    sees a counter change (that would recompile). Returns how many layers redrew.
    """
    return sum(m.redraw_at(step) for m in model.modules() if isinstance(m, LayerAttention))


def padding_mask(
    batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None, **kwargs
):
    """Mask function for ``attnpaper``: the bool [B, N] padding mask (True = real token), or None.

    The mask is passed on as it is, never inspected (asking whether it has any padding would make
    the host wait for the GPU in every forward).
    """
    if attention_mask is None:
        return None
    return attention_mask[:, -kv_length:].to(torch.bool)


def attnpaper_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: q, k, v [B, H, N, D] -> ([B, N, H, D], None)."""
    layer = getattr(module, "attnpaper", None)
    if layer is None:
        raise ValueError(
            f"{type(module).__name__} has no attnpaper settings: build the model with attnpaper.build_model"
        )
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(f"attnpaper expects a 2D padding mask, got shape {tuple(attention_mask.shape)}")
    if module.training and not torch.compiler.is_compiling():  # a compiled step's loop redraws (redraw_features)
        layer.count_training_forward()
    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is None and not PACKED_KWARGS.isdisjoint(kwargs):
        raise ValueError(
            f"a packed batch reached {type(module).__name__} without cu_seq_lens_q (it got "
            f"{', '.join(sorted(PACKED_KWARGS.intersection(kwargs)))}): attention would run across every "
            "review in the row; valid: all of cu_seq_lens_q/k and max_length_q/k (training.batches.packed_forward)"
        )
    if cu_seqlens is not None and layer.kind == "exact":  # packed: [1, H, T, D], every token real
        qp, kp, vp = (x.squeeze(0).transpose(0, 1) for x in (query, key, value))  # each [T, H, D]
        out, kernel = varlen_attention(
            qp, kp, vp, cu_seqlens, kwargs["max_length_q"], scaling, dropout, layer.flash_backend
        )
        out = out[None]  # [1, T, H, D]
    elif cu_seqlens is not None:  # packed linear: per-sequence sums over chunks (training.batches)
        if kwargs.get("chunk_seq") is None:
            raise ValueError(
                "linear layers on packed batches need chunk_seq, key_mask and segments: collate "
                "with Collator(layout='packed', chunk=c) for c > 1 (see batches.chunk_for)"
            )
        packing = (kwargs["chunk_seq"], kwargs["segments"], kwargs["key_mask"][None])  # key_mask [1, T]
        out, kernel = _linear(layer, query, key, value, None, scaling, packing)
    elif layer.kind == "exact":
        out, kernel = exact_attention(query, key, value, attention_mask, scaling, dropout, layer.flash_backend)
    else:
        out, kernel = _linear(layer, query, key, value, attention_mask, scaling)
    if not torch.compiler.is_compiling():  # a set that changes would make a compiled step recompile
        layer.kernels.add(kernel)
    return out, None


def _linear(layer, q, k, v, key_mask, scaling, packing=None):
    """Linear attention: feature maps in float32 (the exponentials need it), products in v's dtype.

    Under bf16 autocast the projection w.x runs as a float32 (TF32) matmul, the exponential and
    stabiliser in float32, and phi(Q), phi(K) are stored in bf16 for the two tensor-core products;
    a compiler fuses each feature map into one kernel. In float32 (CPU) every step is float32.
    ``packing``: None for a padded batch [B, H, N, D]; for a packed one [1, H, T, D] the tuple
    (chunk_seq, segments, key_mask [1, T]) of ``packed_linear_attention`` (its name then says so).
    """
    low = v.dtype
    chunk_seq, segments, key_mask = packing if packing is not None else (None, None, key_mask)
    with torch.autocast("cuda" if q.is_cuda else "cpu", enabled=False):
        if layer.feature_map == "favor+":
            scale = (q.shape[-1] ** -0.5 if scaling is None else scaling) ** 0.5  # d^-1/4 on each side
            packed = {"chunk_seq": chunk_seq, "segments": segments}
            phi_q = favor_features(q.float() * scale, layer.proj, is_query=True, align=FEATURE_ALIGN).to(low)
            phi_k = favor_features(k.float() * scale, layer.proj, key_mask, False, align=FEATURE_ALIGN, **packed)
            phi_k = phi_k.to(low)  # phi_q, phi_k: [B, H, N, M rounded up to FEATURE_ALIGN]
            name = f"linear favor+ (M={layer.num_features}, {_short(low)} products)"
        else:
            phi_q, phi_k = (_align_features(elu_features(x.float()).to(low)) for x in (q, k))  # [B, H, N, D']
            name = f"linear elu+1 ({_short(low)} products)"
        if packing is None:
            out = linear_attention(phi_q, phi_k, v, key_mask)
        else:
            out = packed_linear_attention(phi_q, phi_k, v, chunk_seq, segments, key_mask)
            name += f", padding-free (chunks of {q.shape[2] // chunk_seq.numel()})"
    return out.transpose(1, 2), name  # [B, N, H, D]


FEATURE_ALIGN = 16
"""phi(Q) and phi(K) get zero features up to a multiple of this many: FAVOR+'s (111 -> 112, 266 -> 272)
in favor_features, together with its projection; elu+1's (the head dim) in _align_features. A zero
feature adds nothing to phi(q).phi(k) or to the normaliser, so the result is the same, while every
product gets shapes that tensor-core GEMMs can load aligned (with 111 or 266 cuBLAS fell back to
unaligned kernels, the costliest of a linear step on the H200: scripts/chunk_sweep.py, and the
top_gpu_ops of results/h200/bench-step.json at commit 673ea0d, in git history)."""


def _align_features(phi):
    extra = -phi.shape[-1] % FEATURE_ALIGN
    return torch.nn.functional.pad(phi, (0, extra)) if extra else phi  # [.., M] -> [.., M + extra]


def _short(dtype) -> str:
    return (
        str(dtype)
        .replace("torch.", "")
        .replace("bfloat16", "bf16")
        .replace("float32", "fp32")
        .replace("float16", "fp16")
    )


def register() -> str:
    """Register the attnpaper attention and mask functions with transformers (idempotent)."""
    AttentionInterface.register(ATTN_NAME, attnpaper_attention)
    AttentionMaskInterface.register(ATTN_NAME, padding_mask)
    return ATTN_NAME
