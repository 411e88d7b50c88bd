"""The attention kernels against their definitions, outside any model."""

import math

import pytest
import torch

from attnpaper.attention import (
    elu_features,
    exact_attention,
    favor_features,
    linear_attention,
    orthogonal_gaussian,
    softmax_attention,
    unpad,
)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def qkv(b=2, h=3, n=10, d=8, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g).to(device, dtype) for _ in range(3)]


def key_mask(lengths, n):
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("lengths", [None, [10, 4]])
def test_exact_equals_softmax(lengths):
    q, k, v = qkv()
    m = None if lengths is None else key_mask(lengths, 10)
    out, kernel = exact_attention(q, k, v, m)
    ref = softmax_attention(q, k, v, m).transpose(1, 2)
    assert out.shape == (2, 10, 3, 8)
    if m is not None:  # only real query positions carry meaning
        out, ref = out[m], ref[m]
    assert rel(out, ref) < 1e-5, kernel


def test_unpad_metadata():
    u = unpad(key_mask([3, 1, 4], 5))
    assert u.cu_seqlens.tolist() == [0, 3, 4, 8] and u.max_seqlen == 4
    assert u.indices.tolist() == [0, 1, 2, 5, 10, 11, 12, 13]


def test_bad_flash_backend():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="valid: auto, varlen"):
        exact_attention(q, k, v, backend="triton")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        exact_attention(q, k, v, key_mask([10, 4], 10), backend="varlen")


def naive_kernel_attention(phi_q, phi_k, v, m):
    """O(N^2): A_ij = phi(q_i).phi(k_j) over real keys, rows normalised."""
    a = torch.einsum("bhim,bhjm->bhij", phi_q, phi_k)
    a = a * m[:, None, None, :]
    return (a / a.sum(-1, keepdim=True)) @ v


def test_elu_linear_equals_naive():
    q, k, v = qkv()
    m = key_mask([10, 6], 10)
    out = linear_attention(elu_features(q), elu_features(k), v, m)
    assert rel(out, naive_kernel_attention(elu_features(q), elu_features(k), v, m)) < 1e-5


def test_padded_keys_leave_numerator_and_normaliser():
    q, k, v = qkv()
    m = key_mask([10, 6], 10)
    proj = orthogonal_gaussian(64, 8, torch.Generator().manual_seed(1))
    pq, pk = favor_features(q * 8**-0.25, proj), favor_features(k * 8**-0.25, proj, m, is_query=False)
    full = linear_attention(pq, pk, v, m)
    # the second sequence cut to its 6 real tokens gives the same answer
    cut = [t[1:, :, :6] for t in (q, k, v)]
    pq6 = favor_features(cut[0] * 8**-0.25, proj)
    pk6 = favor_features(cut[1] * 8**-0.25, proj, is_query=False)
    assert rel(full[1:, :, :6], linear_attention(pq6, pk6, cut[2])) < 1e-5


def test_orthogonal_features_are_orthogonal_in_blocks():
    w = orthogonal_gaussian(20, 8, torch.Generator().manual_seed(0))
    unit = w / w.norm(dim=1, keepdim=True)
    gram = unit[:8] @ unit[:8].T
    assert torch.allclose(gram, torch.eye(8), atol=1e-5)
    assert w.shape == (20, 8)


def test_favor_unbiased_on_small_case():
    """E[phi(q).phi(k)] = exp(q.k): averaged over many feature draws."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 4, generator=g) * 0.5, torch.randn(1, 1, 1, 4, generator=g) * 0.5
    draws = []
    for _ in range(4000):
        proj = orthogonal_gaussian(8, 4, g)
        pq = favor_features(q, proj, eps=0.0, stabilise=False)
        pk = favor_features(k, proj, is_query=False, eps=0.0, stabilise=False)
        draws.append((pq * pk).sum())
    est, exact = torch.stack(draws).mean(), torch.exp((q * k).sum())
    stderr = torch.stack(draws).std() / math.sqrt(len(draws))
    assert abs(est - exact) < 4 * stderr, (est, exact, stderr)


def favor_error(m, seeds=5):
    errs = []
    for s in range(seeds):
        q, k, v = qkv(b=1, h=2, n=32, d=16, seed=s)
        q, k = q * 0.5, k * 0.5
        proj = orthogonal_gaussian(m, 16, torch.Generator().manual_seed(100 + s))
        sc = 16**-0.25
        out = linear_attention(favor_features(q * sc, proj), favor_features(k * sc, proj, is_query=False), v)
        errs.append(rel(out, softmax_attention(q, k, v)))
    return sum(errs) / len(errs)


def test_favor_error_falls_with_features():
    e16, e64, e256 = favor_error(16), favor_error(64), favor_error(256)
    assert e256 < e64 < e16, (e16, e64, e256)
    assert e256 < 0.6 * e16


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["auto", "varlen", "sdpa"])
def test_gpu_varlen_matches_eager_bf16(backend):
    q, k, v = qkv(b=4, h=12, n=128, d=64, device="cuda", dtype=torch.bfloat16)
    m = key_mask([128, 100, 37, 5], 128).cuda()
    out, kernel = exact_attention(q, k, v, m, backend=backend)
    ref = softmax_attention(q.double(), k.double(), v.double(), m).transpose(1, 2)
    assert rel(out[m].double(), ref[m]) < 1e-2, kernel
    # padded input: auto is SDPA's fused kernels (no per-layer unpad, no sync); varlen only when asked for
    assert ("varlen" in kernel) == (backend == "varlen"), kernel


def test_aligned_features_are_the_same_features_then_zeros():
    """favor_features(align=16): the first M features as without padding, then exact zeros, so the
    attention built on them is unchanged (float64)."""
    import torch

    from attnpaper.attention import favor_features, linear_attention, orthogonal_gaussian

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    proj = orthogonal_gaussian(11, 8, g).double()
    for is_query, key_mask in ((True, None), (False, mask)):
        plain = favor_features(q if is_query else k, proj, key_mask, is_query)
        aligned = favor_features(q if is_query else k, proj, key_mask, is_query, align=16)
        assert aligned.shape[-1] == 16 and torch.allclose(aligned[..., :11], plain, rtol=1e-12, atol=0)
        assert not aligned[..., 11:].any()
    out = linear_attention(favor_features(q, proj), favor_features(k, proj, mask, False), v, mask)
    aligned = linear_attention(
        favor_features(q, proj, align=16), favor_features(k, proj, mask, False, align=16), v, mask
    )
    assert torch.allclose(out, aligned, rtol=0, atol=1e-12)
