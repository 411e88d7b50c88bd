"""What a GPU's compute capability allows: FlashAttention-2 kernels and native bf16 need sm80 (Ampere).

The paper's own card, a T4, is sm75: there the fused varlen kernels (torch's ``varlen_attn``,
flash-attn's, SDPA's FLASH and cuDNN backends) do not run, and bf16 is emulated at best. Kernel
choice, ``precision="auto"`` and the up-front checks ask here; tests patch
``torch.cuda.get_device_capability`` to play a T4 on a CPU.
"""

from __future__ import annotations

import torch

FA2 = (8, 0)
"""Compute capability FlashAttention-2 needs (torch varlen_attn, flash-attn, SDPA FLASH and cuDNN attention)."""
BF16 = (8, 0)
"""Compute capability with native bf16 (torch.cuda.is_bf16_supported() counts emulation on older cards)."""


def capability(device) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device; None for any other device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)  # what Dynamo folds to a constant inside a compiled step
    return props.major, props.minor


def has_fa2(device) -> bool:
    """True on a CUDA GPU where FlashAttention-2 kernels run (sm80 and later)."""
    cc = capability(device)
    return cc is not None and cc >= FA2


def has_bf16(device) -> bool:
    """True on a CUDA GPU with native bf16 (sm80 and later)."""
    cc = capability(device)
    return cc is not None and cc >= BF16


def describe(device) -> str:
    """'a CPU' or 'a GPU of compute capability 7.5', for one-line messages."""
    cc = capability(device)
    return f"a {torch.device(device).type.upper()}" if cc is None else f"a GPU of compute capability {cc[0]}.{cc[1]}"
