"""Linear attention: phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1), in O(N M D) instead of O(N^2 D).

Two feature maps: Performer's FAVOR+ (positive orthogonal random features, an unbiased
estimate of the softmax kernel exp(q.k/sqrt(d))) and Katharopoulos et al.'s elu(x)+1.
Padded keys are zeroed in phi(K), so they leave both the numerator and the normaliser.

Packed (padding-free) batches are handled by ``packed_linear_attention`` and the ``chunk_seq``
arguments of ``favor_features``: see ``packed_linear_attention`` for the layout and its cost.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def favor_features(
    x, proj, key_mask=None, is_query=True, eps=1e-6, stabilise=True, chunk_seq=None, segments=None, align=1
):
    """Positive random features phi(x) = exp(w.x - |x|^2/2 - c) / sqrt(M), x already scaled by d^-1/4.

    x: [B, H, N, D]; proj: [M, D]. The stabiliser c (a max) cancels in the ratio: per token for
    queries, one constant over the real keys of each (batch, head) for keys; for packed keys
    (B = 1, ``chunk_seq`` and ``segments`` as in ``packed_linear_attention``) one constant over the
    real keys of each (sequence, head). With stabilise=False and eps=0, E[phi(q).phi(k)] = exp(q.k)
    exactly. c is detached (as in performer-pytorch): it cancels in the attention's ratio up to eps,
    and a gradient through the max would cost the backward a pass that adds about zero.
    align: the features come back padded with zeros to a multiple of ``align`` (a zero feature adds
    nothing to phi(q).phi(k)), and w.x is computed with proj padded the same way, so both of its
    matrix products, forward and backward, have aligned shapes (111 or 266 columns sent the H200 to
    unaligned TF32 kernels). Returns [B, H, N, M] (M rounded up to ``align``).
    """
    m = proj.shape[0]
    extra = -m % align
    if extra:
        proj = torch.nn.functional.pad(proj, (0, 0, 0, extra))  # [M + extra, D], zero rows
    wx_all = torch.einsum("bhnd,md->bhnm", x, proj)  # [B, H, N, M + extra]
    wx = wx_all[..., :m] if extra else wx_all  # the real features, for the stabiliser
    sq = (x * x).sum(-1, keepdim=True) / 2  # [B, H, N, 1]
    if not stabilise:
        c = torch.zeros_like(sq)
    elif is_query:
        c = wx.detach().amax(dim=-1, keepdim=True)
    else:  # c is a constant, not a function of x: it cancels in the ratio, so no gradient flows through it
        live = wx.detach() if key_mask is None else wx.detach().masked_fill(~key_mask[:, None, :, None], float("-inf"))
        if chunk_seq is None:
            c = live.amax(dim=(-1, -2), keepdim=True)
        else:
            c = segment_amax(live.amax(dim=-1), chunk_seq, segments)[..., None]
    phi = (torch.exp(wx_all - sq - c) + eps) / math.sqrt(m)
    if extra:
        phi = torch.where(torch.arange(m + extra, device=phi.device) < m, phi, 0.0)  # the padding: exactly 0
    return phi


def segment_amax(x, chunk_seq, segments: int):
    """Each sequence's max of x [B, H, T] over its tokens, on every token of it: [B, H, T].

    The tokens come in chunks of T / C, each inside one sequence (``chunk_seq`` [C] names it);
    chunk maxima go to ``segments`` sequence slots by scatter_reduce, then back by gather.
    """
    b, h, t = x.shape
    chunks = chunk_seq.numel()
    per_chunk = x.reshape(b, h, chunks, t // chunks).amax(-1)  # [B, H, C]
    idx = chunk_seq.expand(b, h, chunks)
    seg = x.new_full((b, h, segments), float("-inf"))
    seg = seg.scatter_reduce(2, idx, per_chunk, "amax", include_self=False)  # [B, H, S]
    return seg.gather(2, idx)[..., None].expand(b, h, chunks, t // chunks).reshape(b, h, t)


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


def packed_linear_attention(phi_q, phi_k, v, chunk_seq, segments: int, key_mask=None, eps=1e-12):
    """Linear attention over packed sequences: each sequence's sums over its own tokens only.

    phi_*: [1, H, T, M]; v: [1, H, T, D]; key_mask: bool [1, T] (False on the padding that fills a
    sequence's last chunk); ``chunk_seq`` int64 [C]: the sequence slot (< ``segments``) of each chunk
    of c = T / C consecutive tokens, no chunk spanning two sequences (the collator pads each
    sequence to a multiple of c and computes all of this on the CPU). Per chunk, phi(K)^T V by a
    batched matmul; ``index_add`` sums the chunks of each sequence into KV_s [H, S, M, D] and z_s;
    each chunk gathers its sequence's sums for phi(Q) KV_s / phi(Q).z_s. Every shape follows from
    (T, c, S), so a token bucket is one static graph, and nothing reads a value back to the host.

    Cost per layer (H heads, M features, D head dim): the padded kernel's 4 H M D FLOPs per token on
    real tokens plus the chunk padding (< c per sequence), and (T / c) H M D adds to sum the chunks.
    The per-chunk sums [H, C, M, D] are D / c times phi(Q)'s size; they are transient (the backward of
    ``_SegmentProducts`` recomputes them; it saves only phi(Q), phi(K), V and the per-sequence sums).
    Measured on the meta device, one FAVOR+ layer forward and backward at DistilBERT@512 (batch 32,
    IMDb lengths: 8,630 real tokens, H=12, M=266, D=64, bf16 products): padded 16,384 tokens, 67.3
    GFLOP, 1,376 MiB saved for the backward; packed (bucket 1,024, c=16) 9,216 tokens, 37.8 GFLOP,
    725 MiB saved, largest transient the per-chunk sums in float32, 449 MiB (eager; 224 MiB in bf16
    where a compiler fuses the cast into the index_add). c=8 doubles that transient, c=32 halves it
    but doubles the chunk padding that every layer computes on (IMDb at 512: 2.3% of real tokens
    at c=16, 4.8% at c=32); training.batches.LINEAR_CHUNK says which c the runs use, measured.
    Products in the inputs' dtype, the sums over chunks, the normaliser and the division in float32,
    as ``linear_attention``. Returns [1, H, T, D] in v's dtype.
    """
    if key_mask is not None:
        phi_k = phi_k * key_mask[:, None, :, None].to(phi_k.dtype)
    acc = torch.promote_types(phi_k.dtype, torch.float32)
    num, den = _SegmentProducts.apply(phi_q, phi_k, v.to(phi_k.dtype), chunk_seq, segments)
    return (num.to(acc) / den.to(acc).clamp_min(eps)[..., None]).to(v.dtype)


def _segment_sum(x, chunk_seq, segments: int):
    """[G, C, ...] summed over the chunks of each sequence slot in float32 (or wider): [G, S, ...]."""
    acc = torch.promote_types(x.dtype, torch.float32)
    out = torch.zeros((x.shape[0], segments, *x.shape[2:]), dtype=acc, device=x.device)
    return out.index_add(1, chunk_seq, x.to(acc))


class _SegmentProducts(torch.autograd.Function):
    """(phi(Q) KV_s, phi(Q).z_s) per token, with KV_s = sum phi(K)^T V and z_s = sum phi(K) over sequence s.

    Written out by hand so that the backward saves only the inputs and the per-sequence sums: the
    per-chunk tensors [H, C, M, D] (D / c times phi(Q)'s size) are recomputed, never kept.
    """

    @staticmethod
    def forward(ctx, phi_q, phi_k, v, chunk_seq, segments):
        b, h, t, m = phi_q.shape
        chunks = chunk_seq.numel()
        pq, pk = (x.reshape(b * h, chunks, t // chunks, m) for x in (phi_q, phi_k))  # [G, C, c, M]
        vv = v.reshape(b * h, chunks, t // chunks, v.shape[-1])  # [G, C, c, D]
        kv = _segment_sum(pk.transpose(-1, -2) @ vv, chunk_seq, segments).to(pk.dtype)  # [G, S, M, D]
        z = _segment_sum(pk.sum(2, dtype=torch.promote_types(pk.dtype, torch.float32)), chunk_seq, segments).to(
            pk.dtype
        )  # [G, S, M]
        num = pq @ kv.index_select(1, chunk_seq)  # [G, C, c, D]
        den = (pq @ z.index_select(1, chunk_seq)[..., None]).squeeze(-1)  # [G, C, c]
        ctx.save_for_backward(pq, pk, vv, kv, z, chunk_seq)
        ctx.segments = segments
        return num.reshape(b, h, t, -1), den.reshape(b, h, t)

    @staticmethod
    def backward(ctx, g_num, g_den):
        pq, pk, vv, kv, z, chunk_seq = ctx.saved_tensors
        b_h, chunks, c, m = pq.shape
        shape = g_den.shape  # [B, H, T]
        g_num = g_num.reshape(b_h, chunks, c, -1).to(pq.dtype)  # [G, C, c, D]
        g_den = g_den.reshape(b_h, chunks, c).to(pq.dtype)  # [G, C, c]
        g_pq = (
            g_num @ kv.index_select(1, chunk_seq).transpose(-1, -2)
            + g_den[..., None] * z.index_select(1, chunk_seq)[:, :, None, :]
        )  # [G, C, c, M]
        g_kv = _segment_sum(pq.transpose(-1, -2) @ g_num, chunk_seq, ctx.segments).to(pq.dtype)  # [G, S, M, D]
        g_z = _segment_sum((pq.transpose(-1, -2) @ g_den[..., None]).squeeze(-1), chunk_seq, ctx.segments).to(
            pq.dtype
        )  # [G, S, M]
        g_kv_c = g_kv.index_select(1, chunk_seq)  # [G, C, M, D]
        g_pk = vv @ g_kv_c.transpose(-1, -2) + g_z.index_select(1, chunk_seq)[:, :, None, :]
        g_v = pk @ g_kv_c
        return (g_pq.reshape(*shape, m), g_pk.reshape(*shape, m), g_v.reshape(*shape, -1), None, None)
