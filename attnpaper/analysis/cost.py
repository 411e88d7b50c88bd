"""Counting the work of one Transformer encoder layer: FLOPs by component, bytes moved, arithmetic intensity.

Pure Python (no torch), so the numbers are exact integers that tests can check. Conventions:

* a multiply-add counts as 2 FLOPs, so a [m, k] @ [k, n] product costs ``2 * m * k * n``;
* the softmax costs ``SOFTMAX_FLOPS_PER_SCORE`` FLOPs per score (scale, max, subtract, exp, sum, divide:
  a convention, not a measurement);
* layer norms, GELU, biases and residual additions are left out (they are O(N d) and small);
* bytes count reads and writes of high-bandwidth memory (HBM) by the attention core only
  (QK^T, softmax, PV), not the projections, with ``dtype_bytes`` per element.
"""

from __future__ import annotations

SOFTMAX_FLOPS_PER_SCORE = 5
"""FLOPs charged per attention score for scaling and the softmax (max, subtract-exp, sum, divide)."""

DISTILBERT_BASE = {"d_model": 768, "n_heads": 12, "d_ff": 3072, "n_layers": 6}
"""The shape of DistilBERT-base: 6 layers, hidden 768, 12 heads of 64, feed-forward 3072."""

MINILM_L6 = {"d_model": 384, "n_heads": 12, "d_ff": 1536, "n_layers": 6}
"""The shape of all-MiniLM-L6-v2 (our offline pretrained stand-in): 6 layers, hidden 384, 12 heads of 32."""

GPUS = {
    "H200 SXM (bf16 dense)": {"peak_flops": 989e12, "bandwidth": 4.8e12},  # the H100's compute, faster HBM
    "T4 (fp16 tensor core)": {"peak_flops": 65e12, "bandwidth": 320e9},
}
"""Datasheet peaks: FLOP/s and HBM bytes/s."""

CUDA_CORE_FLOPS = {
    "H200 SXM (bf16 dense)": 67e12,  # NVIDIA H200 Tensor Core GPU datasheet: FP32 67 TFLOPS
    "T4 (fp16 tensor core)": 8.1e12,  # NVIDIA T4 datasheet: single precision (FP32) 8.1 TFLOPS
}
"""Datasheet FP32 peaks of the CUDA cores (FLOP/s) of the GPUs in :data:`GPUS`, by the same names: what
runs elementwise work (its arithmetic in fp32 under autocast) and, on a T4 (Turing, no TF32), fp32 matrix
products. A mapping of its own, not a key in GPUS, whose entries are ``ridge_point(**gpu)``'s arguments."""

COMPONENTS = ("qkv_proj", "scores", "softmax", "pv", "out_proj", "ffn")
"""Keys of :func:`layer_flops`, in the order the layer computes them."""

ATTENTION_CORE = ("scores", "softmax", "pv")
"""The components whose cost grows as N^2: what FlashAttention and linear attention change."""


def _check(n, d_model, n_heads, batch):
    for name, value in (("n", n), ("d_model", d_model), ("n_heads", n_heads), ("batch", batch)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")


def layer_flops(n, d_model, n_heads, d_ff, batch=1) -> dict[str, int]:
    """Forward FLOPs of one encoder layer on ``batch`` sequences of ``n`` tokens, by component.

    qkv_proj: X W_Q, X W_K, X W_V; scores: Q K^T for all heads (2 B N^2 d); softmax; pv: P V
    (2 B N^2 d); out_proj: the output projection; ffn: two matrices d -> d_ff -> d.
    """
    _check(n, d_model, n_heads, batch)
    b, d = batch, d_model
    return {
        "qkv_proj": 3 * 2 * b * n * d * d,
        "scores": 2 * b * n * n * d,  # H heads x 2 N N d_head
        "softmax": SOFTMAX_FLOPS_PER_SCORE * b * n_heads * n * n,
        "pv": 2 * b * n * n * d,
        "out_proj": 2 * b * n * d * d,
        "ffn": 2 * 2 * b * n * d * d_ff,
    }


def model_flops(n, d_model, n_heads, d_ff, n_layers, batch=1) -> dict[str, int]:
    """Forward FLOPs of ``n_layers`` identical layers, by component (embeddings and head left out)."""
    return {k: v * n_layers for k, v in layer_flops(n, d_model, n_heads, d_ff, batch).items()}


def attention_fraction(flops: dict[str, int]) -> float:
    """Share of the FLOPs in the N^2 attention core (scores, softmax, PV)."""
    return sum(flops[k] for k in ATTENTION_CORE) / sum(flops.values())


def attention_bytes(n, d_model, n_heads, batch=1, dtype_bytes=2, fused=False) -> int:
    """HBM bytes read and written by the attention core of one layer.

    Unfused (eager): read Q, K; write S; read S; write P; read P, V; write O, i.e.
    4 B H N^2 + 4 B N d elements. Fused (FlashAttention, idealised: K and V read once, as when the
    whole sequence fits in on-chip memory): read Q, K, V, write O, i.e. 4 B N d elements.
    """
    _check(n, d_model, n_heads, batch)
    qkvo = 4 * batch * n * d_model
    scores = 0 if fused else 4 * batch * n_heads * n * n
    return dtype_bytes * (qkvo + scores)


def attention_core_flops(n, d_model, n_heads, batch=1) -> int:
    """FLOPs of the attention core of one layer (scores + softmax + PV)."""
    f = layer_flops(n, d_model, n_heads, 1, batch)
    return sum(f[k] for k in ATTENTION_CORE)


def arithmetic_intensity(flops, nbytes) -> float:
    """FLOPs per byte moved."""
    if nbytes <= 0:
        raise ValueError("nbytes must be positive")
    return flops / nbytes


def ridge_point(peak_flops, bandwidth) -> float:
    """Arithmetic intensity (FLOP/byte) above which a kernel can be compute-bound on a GPU (roofline)."""
    return peak_flops / bandwidth


def roofline_time(flops, nbytes, peak_flops, bandwidth) -> float:
    """Lower bound on run time in seconds: max(flops / peak, bytes / bandwidth)."""
    return max(flops / peak_flops, nbytes / bandwidth)


def linear_attention_flops(n, d_model, n_heads, num_features, batch=1) -> int:
    """FLOPs of the linear-attention core of one layer with ``num_features`` (M) features per head.

    phi(Q), phi(K): 2 B H N D M each (FAVOR+ projections); phi(K)^T V: 2 B H N M D;
    phi(Q) (phi(K)^T V): 2 B H N M D; normaliser phi(Q) (phi(K)^T 1): 2 B H N M. Linear in N.
    """
    _check(n, d_model, n_heads, batch)
    h, dh, m = n_heads, d_model // n_heads, num_features
    return batch * (2 * 2 * h * n * dh * m + 2 * 2 * h * n * m * dh + 2 * h * n * m)
