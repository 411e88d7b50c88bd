"""Exact attention through fused kernels (the "flash" variant).

Two layouts. Packed: the model runs on real tokens only ([T, H, D], sequences delimited by
``cu_seqlens`` that the collator computed on the CPU), and a varlen FlashAttention kernel does the
attention (``varlen_attention``). Padded: [B, H, N, D] with a key mask goes to SDPA's fused kernels,
with no host synchronisation. ``unpad`` builds varlen metadata from a mask on the device; it syncs
(``nonzero``), so only the teaching chapter and an explicit per-layer ``flash_backend`` use it.
On CPU the exact SDPA path keeps everything testable. What a GPU's compute capability allows is asked
here too (``has_fa2``, ``has_bf16``): the paper's T4 (sm75) has neither FlashAttention-2 nor native bf16;
tests patch ``torch.cuda.get_device_properties`` to play one on a CPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..variants import FLASH_BACKENDS, NOMASK  # the flash_backend option's names, defined with the variants

_HAS_VARLEN = importlib.util.find_spec("torch.nn.attention.varlen") is not None  # looked up once: a compiled
_HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None  # step cannot trace find_spec


FA2 = (8, 0)
"""Compute capability FlashAttention-2 needs (torch varlen_attn, flash-attn, SDPA FLASH and cuDNN attention)."""
BF16 = (8, 0)
"""Compute capability with native bf16 (torch.cuda.is_bf16_supported() counts emulation on older cards)."""


KERNEL_SETS = {"auto": None, "sm75": (7, 5)}
"""A run's ``kernel_set``: the compute capability whose kernel choices it makes (None: the GPU's own). sm75 is
the paper's T4: SDPA's memory-efficient and math kernels only (no FlashAttention-2, no cuDNN attention) and
no bf16, on whatever GPU runs it (issue 39: the time column in the setup a T4 user had)."""
_EMULATED: list = []  # the capabilities of the kernel_set blocks entered, innermost last


def capability(device) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device, at most the innermost ``kernel_set`` block's; None for any other device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)  # what Dynamo folds to a constant inside a compiled step
    real = props.major, props.minor
    return min(real, _EMULATED[-1]) if _EMULATED else real


@contextlib.contextmanager
def kernel_set(name: str, device):
    """Within the block, choose kernels as a GPU of KERNEL_SETS[name]'s capability would: ``has_fa2`` and
    ``has_bf16`` answer for it, and SDPA, transformers' own calls too, may use only the kernels it has
    (memory-efficient and math below sm80). 'auto', or a device that is not CUDA: no change."""
    if name not in KERNEL_SETS:
        raise ValueError(f"unknown kernel_set {name!r}; valid: {', '.join(KERNEL_SETS)}")
    cc = KERNEL_SETS[name]
    if cc is None or torch.device(device).type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    below_fa2 = sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    _EMULATED.append(cc)
    try:
        with below_fa2 if cc < FA2 else contextlib.nullcontext():
            yield
    finally:
        _EMULATED.pop()


def has_fa2(device) -> bool:
    """True on a CUDA GPU where FlashAttention-2 kernels run (sm80 and later)."""
    cc = capability(device)
    return cc is not None and cc >= FA2


def has_bf16(device) -> bool:
    """True on a CUDA GPU with native bf16 (sm80 and later)."""
    cc = capability(device)
    return cc is not None and cc >= BF16


def device_phrase(device) -> str:
    """'a CPU' or 'a GPU of compute capability 7.5', for one-line messages."""
    cc = capability(device)
    return f"a {torch.device(device).type.upper()}" if cc is None else f"a GPU of compute capability {cc[0]}.{cc[1]}"


def has_torch_varlen() -> bool:
    """True when this torch ships ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention-2 varlen)."""
    return _HAS_VARLEN


def has_flash_attn() -> bool:
    """True when the ``flash-attn`` package is importable."""
    return _HAS_FLASH_ATTN


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


def _pack(x, u: Unpadded):
    """[B, H, N, D] -> [T, H, D] holding the real tokens only."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b * n, h, d).index_select(0, u.indices)


def _scatter(out, u: Unpadded, b, n):
    """[T, H, D] -> [B, N, H, D] with zeros at padded positions."""
    full = out.new_zeros(b * n, *out.shape[1:])
    full.index_copy_(0, u.indices, out)
    return full.view(b, n, *out.shape[1:])


UNMASKED = ", no padding mask (padding attended)"
"""Ends the name of the kernel a flash layer ran with flash_backend='nomask' (``exact_attention``)."""
FALLBACK = ", fallback: dense [T, T] mask"
"""Ends the name of the kernel a flash layer ran when ``auto`` found no fused varlen kernel on a GPU."""


def _check(requested):
    if requested not in FLASH_BACKENDS:
        raise ValueError(f"unknown flash_backend {requested!r}; valid: {', '.join(FLASH_BACKENDS)}")


def _fused_missing(device, dtype) -> str | None:
    """Why FlashAttention-2's varlen kernels cannot run here (one phrase), or None when they can."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return "a CUDA device and half precision"
    if not has_fa2(device):
        return f"a GPU of compute capability >= {FA2[0]}.{FA2[1]} (FlashAttention-2), not {device_phrase(device)}"
    return None


def choose_backend(requested: str, device: torch.device) -> str:
    """Resolve ``requested`` (one of FLASH_BACKENDS) to the kernel that runs on the padded layout.

    ``auto`` is SDPA's fused kernels (FA2 without a mask, cuDNN or memory-efficient with one; only
    memory-efficient before sm80): no per-layer unpadding, no host sync. 'varlen'/'flash_attn' asked
    for explicitly unpad in every layer (``unpad``, which syncs); 'math' is SDPA's math backend;
    'nomask' is SDPA with the padding mask dropped (``exact_attention``).
    """
    _check(requested)
    if requested in ("varlen", "flash_attn") and device.type == "cuda" and not has_fa2(device):
        raise ValueError(
            f"flash_backend {requested!r} needs a GPU of compute capability >= {FA2[0]}.{FA2[1]} "
            f"(FlashAttention-2), not {device_phrase(device)}; valid here: 'auto', 'sdpa', 'math'"
        )
    return "sdpa" if requested == "auto" else requested


def choose_varlen_backend(requested: str, device: torch.device, dropout: float, dtype=torch.bfloat16) -> str:
    """The kernel for packed (padding-free) attention: 'varlen', 'flash_attn', or SDPA with a dense
    block-diagonal mask ('sdpa'; 'math' restricts SDPA to its math backend).

    ``auto`` takes a fused varlen kernel where one runs (CUDA, sm80+, half precision), else 'sdpa';
    on a GPU that is a fallback, and the kernel's name says so (``FALLBACK``). 'varlen' and
    'flash_attn' asked for where they cannot run are refused in one line.
    """
    _check(requested)
    if requested == NOMASK:
        raise ValueError(
            f"flash_backend {NOMASK!r} attends the padding of padded batches, and a packed batch holds none; "
            "valid here: 'auto', 'varlen', 'flash_attn', 'sdpa', 'math' (or layout='padded' for 'nomask')"
        )
    if requested in ("sdpa", "math"):
        return requested
    missing = _fused_missing(device, dtype)
    if requested != "auto":  # varlen, flash_attn
        if missing:
            raise ValueError(f"flash_backend {requested!r} needs {missing}; valid here: 'auto', 'sdpa', 'math'")
        return requested
    if missing:
        return "sdpa"
    if dropout > 0.0 and has_flash_attn():
        return "flash_attn"  # has dropout, which torch's varlen kernel lacks
    if has_torch_varlen() and dropout == 0.0:
        return "varlen"
    return "flash_attn" if has_flash_attn() else "sdpa"


def segment_mask(cu_seqlens, total):
    """bool [T, T]: True where query and key belong to the same packed sequence (block diagonal)."""
    seg = torch.searchsorted(cu_seqlens[1:], torch.arange(total, device=cu_seqlens.device), right=True)  # [T]
    return seg[:, None] == seg[None, :]


def varlen_attention(q, k, v, cu_seqlens, max_seqlen: int, scale=None, dropout=0.0, backend="auto"):
    """Exact attention over packed sequences, no padding anywhere. q, k, v: [T, H, D]; cu_seqlens int32 [S+1].

    ``max_seqlen`` is an upper bound of the sequence lengths (a static bucket size keeps one CUDA graph
    per shape). Returns ([T, H, D], name of the kernel that ran). Never synchronises with the host.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    kernel = choose_varlen_backend(backend, q.device, dropout, q.dtype)
    if kernel == "varlen":
        if dropout > 0.0:
            raise ValueError(
                "torch's varlen_attn has no dropout; set attention_dropout=0 or flash_backend='flash_attn'"
            )
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(
            q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, scale=scale
        ), "torch.varlen_attn (FA2), padding-free"
    if kernel == "flash_attn":
        from flash_attn import flash_attn_varlen_func

        out = flash_attn_varlen_func(
            q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p=dropout, softmax_scale=scale
        )
        return out, "flash_attn.flash_attn_varlen_func, padding-free"
    mask = segment_mask(cu_seqlens, q.shape[0])[None, None]  # [1, 1, T, T]
    qh, kh, vh = (x.transpose(0, 1)[None] for x in (q, k, v))  # each [1, H, T, D]
    with _only_math(kernel == "math"):
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, dropout_p=dropout, scale=scale)
    name = f"sdpa {'MATH ' if kernel == 'math' else ''}block-diagonal ({q.device.type}), padding-free"
    return out.squeeze(0).transpose(0, 1), name + (FALLBACK if backend == "auto" and q.is_cuda else "")


def _only_math(on: bool):
    """SDPA restricted to its math backend (flash_backend='math'), or no restriction."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH]) if on else contextlib.nullcontext()


def exact_attention(q, k, v, key_mask=None, scale=None, dropout=0.0, backend="auto"):
    """Exact softmax attention. q, k, v: [B, H, N, D]; key_mask bool [B, N] or None.

    Returns (output [B, N, H, D], name of the kernel that ran). backend 'nomask' drops ``key_mask``, so
    padding is attended as keys, and runs SDPA unmasked: its FlashAttention kernel on a GPU of sm80+ in half
    precision (as PyTorch 2.0 and 2.1's flash kernel, which took no mask, would have), math on a CPU; the
    kernel's name ends in ``UNMASKED``.
    """
    b, h, n, d = q.shape
    scale = d**-0.5 if scale is None else scale
    kernel = choose_backend(backend, q.device)
    if kernel == NOMASK:
        out, name = exact_attention(q, k, v, None, scale, dropout, "auto")
        return out, name + UNMASKED
    if kernel in ("varlen", "flash_attn") and key_mask is not None:
        if q.device.type != "cuda":
            raise ValueError(f"flash_backend {kernel!r} needs a CUDA device; valid on CPU: 'math', 'sdpa', 'auto'")
        u = unpad(key_mask)  # per layer, a sync each: this explicit path is for teaching and checks only
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
                qp,
                kp,
                vp,
                u.cu_seqlens,
                u.cu_seqlens,
                u.max_seqlen,
                u.max_seqlen,
                dropout_p=dropout,
                softmax_scale=scale,
            )
            name = "flash_attn.flash_attn_varlen_func"
        return _scatter(out, u, b, n), name
    if kernel == "flash_attn":  # no padding: the dense flash-attn kernel
        from flash_attn import flash_attn_func

        out = flash_attn_func(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout, softmax_scale=scale
        )
        return out, "flash_attn.flash_attn_func"
    mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, N]
    if kernel == "math" or q.device.type != "cuda":
        with _only_math(kernel == "math"):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
        return out.transpose(1, 2), f"sdpa {'MATH ' if kernel == 'math' else ''}({q.device.type})"
    backends, name = _fused_backends(q, mask is None)
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel(backends):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    return out.transpose(1, 2), name


def _fused_backends(q, unmasked: bool):
    """SDPA's fused kernels for a CUDA q [B, H, N, D]: FlashAttention-2 when it can run (no mask, half
    precision, sm80+), else cuDNN/memory-efficient (only memory-efficient before sm80). -> (backends, name)."""
    from torch.nn.attention import SDPBackend

    if not has_fa2(q.device):  # FA2 and cuDNN attention need sm80; memory-efficient runs from sm50
        return [SDPBackend.EFFICIENT_ATTENTION], "sdpa EFFICIENT"
    if unmasked and q.dtype in (torch.float16, torch.bfloat16):
        return [SDPBackend.FLASH_ATTENTION], "sdpa FLASH_ATTENTION (FA2)"
    if q.shape[2] % 128 == 64:  # cuDNN's masked backward can give NaN at these lengths (PyTorch issue 196678)
        return [SDPBackend.EFFICIENT_ATTENTION], "sdpa EFFICIENT"
    return [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION], "sdpa CUDNN/EFFICIENT"
