"""Linear attention: phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1), in O(N M D) instead of O(N^2 D).

Two feature maps: Performer's FAVOR+ (positive orthogonal random features, an unbiased
estimate of the softmax kernel exp(q.k/sqrt(d))) and Katharopoulos et al.'s elu(x)+1.
Padded keys are zeroed in phi(K), so they leave both the numerator and the normaliser.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FEATURE_MAPS = ("favor+", "elu")
"""Names accepted by the ``feature_map`` option."""


def orthogonal_gaussian(num_features: int, dim: int, generator=None) -> torch.Tensor:
    """[M, D] rows drawn in orthogonal blocks, each row rescaled to the norm of a Gaussian vector.

    Each row is marginally N(0, I_D), so the FAVOR+ estimate stays unbiased; orthogonality
    between rows lowers its variance (Choromanski et al., 2021, section 2.4).
    """
    blocks, left = [], num_features
    while left > 0:
        g = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        qmat, r = torch.linalg.qr(g)
        qmat = qmat * torch.sign(torch.diagonal(r))  # make the QR factor Haar-distributed
        blocks.append(qmat.T[: min(left, dim)])
        left -= dim
    w = torch.cat(blocks)  # [M, D], unit rows
    norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1)  # chi_D
    return (w * norms[:, None]).float()


def favor_features(x, proj, key_mask=None, is_query=True, eps=1e-6, stabilise=True):
    """Positive random features phi(x) = exp(w.x - |x|^2/2 - c) / sqrt(M), x already scaled by d^-1/4.

    x: [B, H, N, D]; proj: [M, D]. The stabiliser c (a max) cancels in the ratio: per token for
    queries, one constant over the real keys of each (batch, head) for keys. With
    stabilise=False and eps=0, E[phi(q).phi(k)] = exp(q.k) exactly. Returns [B, H, N, M].
    """
    wx = torch.einsum("bhnd,md->bhnm", x, proj)  # [B, H, N, M]
    sq = (x * x).sum(-1, keepdim=True) / 2  # [B, H, N, 1]
    if not stabilise:
        c = torch.zeros_like(sq)
    elif is_query:
        c = wx.amax(dim=-1, keepdim=True)
    else:
        live = wx if key_mask is None else wx.masked_fill(~key_mask[:, None, :, None], float("-inf"))
        c = live.amax(dim=(-1, -2), keepdim=True)
    return (torch.exp(wx - sq - c) + eps) / math.sqrt(proj.shape[0])


def elu_features(x):
    """Katharopoulos et al.'s feature map elu(x) + 1 (positive, deterministic). [.., D] -> [.., D]."""
    return F.elu(x) + 1


def linear_attention(phi_q, phi_k, v, key_mask=None, eps=1e-12):
    """Attention with a factorised kernel phi(q).phi(k). phi_*: [B, H, N, M]; v: [B, H, N, D].

    Padded keys are zeroed in phi(K) so they count in neither sum. The products run in the inputs'
    dtype (bf16 on a GPU: tensor cores, float32 accumulation); the normaliser's sum and the final
    division in float32. Returns [B, H, N, D] in v's dtype.
    """
    if key_mask is not None:
        phi_k = phi_k * key_mask[:, None, :, None].to(phi_k.dtype)
    acc = torch.promote_types(phi_k.dtype, torch.float32)  # float32, or float64 for a float64 reference
    kv = torch.einsum("bhnm,bhnd->bhmd", phi_k, v.to(phi_k.dtype))  # [B, H, M, D]: sum_j phi(k_j) v_j^T
    z = phi_k.sum(dim=2, dtype=acc)  # [B, H, M]: sum_j phi(k_j)
    num = torch.einsum("bhnm,bhmd->bhnd", phi_q, kv)  # [B, H, N, D]
    den = torch.einsum("bhnm,bhm->bhn", phi_q, z.to(phi_q.dtype))  # [B, H, N]
    return (num.to(acc) / den.to(acc).clamp_min(eps)[..., None]).to(v.dtype)
