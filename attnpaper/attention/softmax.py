"""Reference softmax attention on small tensors: the O(N^2) definition every kernel is checked against."""

from __future__ import annotations

import torch


def softmax_attention(q, k, v, key_mask=None, scale=None):
    """softmax(q k^T * scale + mask) v, with padded keys (key_mask False) given zero weight.

    q, k, v: [B, H, N, D]; key_mask: bool [B, N] (True = real token) or None. Returns [B, H, N, D].
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("bhid,bhjd->bhij", q, k) * scale  # [B, H, N, N]
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return torch.einsum("bhij,bhjd->bhid", scores.softmax(dim=-1), v)
