"""Exact attention through fused kernels (the "flash" variant).

Padded batches are unpadded to a packed [total_tokens, H, D] layout and sent to a varlen
FlashAttention kernel, so no work is spent on padding; unpadded batches use SDPA's fused
backends. On CPU the exact SDPA path keeps everything testable.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FLASH_BACKENDS = ("auto", "varlen", "flash_attn", "sdpa", "math")
"""Names accepted by the ``flash_backend`` option; ``auto`` picks the best one available."""


def has_torch_varlen() -> bool:
    """True when this torch ships ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention-2 varlen)."""
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def has_flash_attn() -> bool:
    """True when the ``flash-attn`` package is importable."""
    return importlib.util.find_spec("flash_attn") is not None


@dataclass
class Unpadded:
    """A padded batch packed to real tokens only: what varlen kernels take."""

    indices: torch.Tensor  # [T] positions of real tokens in the flattened [B*N] batch
    cu_seqlens: torch.Tensor  # [B+1] int32 prefix sums of sequence lengths
    max_seqlen: int


def unpad(key_mask: torch.Tensor) -> Unpadded:
    """Pack a bool padding mask [B, N] (True = real token) into varlen metadata."""
    lengths = key_mask.sum(dim=1, dtype=torch.int32)  # [B]
    indices = torch.nonzero(key_mask.flatten(), as_tuple=False).flatten()  # [T]
    cu = F.pad(torch.cumsum(lengths, dim=0, dtype=torch.int32), (1, 0))  # [B+1]
    return Unpadded(indices, cu, int(lengths.max()))


_LAST: list = [None, None]  # (mask, Unpadded): every layer of one forward gets the same mask tensor


def unpad_once(key_mask: torch.Tensor) -> Unpadded:
    """unpad(), computed once per forward pass instead of once per layer (it syncs with the GPU)."""
    if _LAST[0] is not key_mask:
        _LAST[:] = [key_mask, unpad(key_mask)]
    return _LAST[1]


def _pack(x, u: Unpadded):
    """[B, H, N, D] -> [T, H, D] holding the real tokens only."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b * n, h, d).index_select(0, u.indices)


def _scatter(out, u: Unpadded, b, n):
    """[T, H, D] -> [B, N, H, D] with zeros at padded positions."""
    full = out.new_zeros(b * n, *out.shape[1:])
    full.index_copy_(0, u.indices, out)
    return full.view(b, n, *out.shape[1:])


def choose_backend(requested: str, device: torch.device, padded: bool, dropout: float,
                   dtype=torch.bfloat16) -> str:
    """Resolve ``requested`` (one of FLASH_BACKENDS) to the kernel that will run."""
    if requested not in FLASH_BACKENDS:
        raise ValueError(f"unknown flash_backend {requested!r}; valid: {', '.join(FLASH_BACKENDS)}")
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "math"
    if not padded or dtype not in (torch.float16, torch.bfloat16):  # FA2 kernels take half precision only
        return "sdpa"
    if has_torch_varlen() and dropout == 0.0:
        return "varlen"
    if has_flash_attn():
        return "flash_attn"  # has dropout, which torch's varlen kernel lacks
    return "sdpa"


def exact_attention(q, k, v, key_mask=None, scale=None, dropout=0.0, backend="auto"):
    """Exact softmax attention. q, k, v: [B, H, N, D]; key_mask bool [B, N] or None.

    Returns (output [B, N, H, D], name of the kernel that ran).
    """
    b, h, n, d = q.shape
    scale = d**-0.5 if scale is None else scale
    kernel = choose_backend(backend, q.device, key_mask is not None, dropout, q.dtype)
    if kernel in ("varlen", "flash_attn") and key_mask is not None:
        if q.device.type != "cuda":
            raise ValueError(f"flash_backend {kernel!r} needs a CUDA device; valid on CPU: 'math', 'sdpa', 'auto'")
        u = unpad_once(key_mask)
        qp, kp, vp = _pack(q, u), _pack(k, u), _pack(v, u)  # each [T, H, D]
        if kernel == "varlen":
            if dropout > 0.0:
                raise ValueError(
                    "torch's varlen_attn has no dropout; set attention_dropout=0 or flash_backend='flash_attn'/'sdpa'"
                )
            from torch.nn.attention.varlen import varlen_attn

            out = varlen_attn(qp, kp, vp, u.cu_seqlens, u.cu_seqlens, u.max_seqlen, u.max_seqlen, scale=scale)
            name = "torch.varlen_attn (FA2)"
        else:
            from flash_attn import flash_attn_varlen_func

            out = flash_attn_varlen_func(
                qp, kp, vp, u.cu_seqlens, u.cu_seqlens, u.max_seqlen, u.max_seqlen,
                dropout_p=dropout, softmax_scale=scale,
            )
            name = "flash_attn.flash_attn_varlen_func"
        return _scatter(out, u, b, n), name
    if kernel == "flash_attn":  # no padding: the dense flash-attn kernel
        from flash_attn import flash_attn_func

        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout, softmax_scale=scale)
        return out, "flash_attn.flash_attn_func"
    mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, N]
    if kernel == "math" or q.device.type != "cuda":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
        return out.transpose(1, 2), f"sdpa ({q.device.type})"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # Fused kernels only: FlashAttention-2 when it can run (no mask, half precision), else cuDNN/memory-efficient.
    if mask is None and q.dtype in (torch.float16, torch.bfloat16):
        backends, name = [SDPBackend.FLASH_ATTENTION], "sdpa FLASH_ATTENTION (FA2)"
    else:
        backends, name = [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION], "sdpa CUDNN/EFFICIENT"
    with sdpa_kernel(backends):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    return out.transpose(1, 2), name
