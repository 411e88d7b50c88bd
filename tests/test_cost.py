"""The FLOP and byte counts of attnpaper.analysis.cost against hand-derived formulas."""

import pytest

from attnpaper.analysis import cost
from attnpaper.analysis.cost import (
    ATTENTION_CORE,
    COMPONENTS,
    DISTILBERT_BASE,
    GPUS,
    arithmetic_intensity,
    attention_bytes,
    attention_core_flops,
    attention_fraction,
    layer_flops,
    linear_attention_flops,
    model_flops,
    ridge_point,
    roofline_time,
)

D = DISTILBERT_BASE


def test_components_and_exact_matmul_counts():
    b, n, d, h, f = 3, 128, 768, 12, 3072
    flops = layer_flops(n, d, h, f, batch=b)
    assert tuple(flops) == COMPONENTS
    assert flops["scores"] == 2 * b * n * n * d
    assert flops["pv"] == flops["scores"]
    assert flops["qkv_proj"] == 6 * b * n * d * d
    assert flops["out_proj"] == 2 * b * n * d * d
    assert flops["ffn"] == 4 * b * n * d * f
    assert flops["softmax"] == cost.SOFTMAX_FLOPS_PER_SCORE * b * h * n * n
    assert all(isinstance(v, int) for v in flops.values())


def test_per_head_sum_equals_all_heads():
    n, d, h = 64, 768, 12
    per_head = h * 2 * n * n * (d // h)  # H separate [N, dh] @ [dh, N] products
    assert layer_flops(n, d, h, 3072)["scores"] == per_head


def test_model_is_layers_times_layer_and_batch_is_linear():
    one = layer_flops(256, **{k: D[k] for k in ("d_model", "n_heads", "d_ff")})
    six = model_flops(256, **D)
    assert six == {k: 6 * v for k, v in one.items()}
    assert model_flops(256, **D, batch=32) == {k: 32 * v for k, v in six.items()}


def test_scaling_in_n():
    a = layer_flops(128, 768, 12, 3072)
    b = layer_flops(256, 768, 12, 3072)
    for k in ATTENTION_CORE:
        assert b[k] == 4 * a[k]
    for k in ("qkv_proj", "out_proj", "ffn"):
        assert b[k] == 2 * a[k]


def test_attention_fraction_small_at_128_large_at_4096():
    f128 = attention_fraction(model_flops(128, **D))
    f4096 = attention_fraction(model_flops(4096, **D))
    # matmul part alone is N / (6 d + N); the softmax adds a little
    assert 128 / (6 * 768 + 128) < f128 < 0.04
    assert f4096 > 0.45
    assert attention_fraction(model_flops(64, **D)) < f128 < f4096


def test_attention_bytes():
    b, n, d, h = 2, 128, 768, 12
    assert attention_bytes(n, d, h, batch=b, dtype_bytes=2) == 2 * (4 * b * h * n * n + 4 * b * n * d)
    assert attention_bytes(n, d, h, batch=b, dtype_bytes=4, fused=True) == 4 * 4 * b * n * d
    # fused traffic is linear in N, unfused is quadratic
    assert attention_bytes(2 * n, d, h, fused=True) == 2 * attention_bytes(n, d, h, fused=True)
    assert attention_bytes(4096, d, h) > 10 * attention_bytes(4096, d, h, fused=True)


def test_intensity_and_ridges():
    assert ridge_point(**GPUS["T4 (fp16 tensor core)"]) == pytest.approx(203.125)
    assert ridge_point(**GPUS["H200 SXM (bf16 dense)"]) == pytest.approx(206.0, rel=1e-3)
    d, h = 768, 12
    # fused intensity of the core is ~N/2 FLOP/byte in 16-bit (4 N^2 d flops over 8 N d bytes)
    ai = arithmetic_intensity(attention_core_flops(1024, d, h), attention_bytes(1024, d, h, fused=True))
    assert 512 < ai < 530
    # unfused attention at N=128 is memory-bound on both GPUs
    ai128 = arithmetic_intensity(attention_core_flops(128, d, h), attention_bytes(128, d, h))
    assert all(ai128 < ridge_point(**g) for g in GPUS.values())
    assert roofline_time(10, 100, peak_flops=10, bandwidth=10) == 10
    with pytest.raises(ValueError):
        arithmetic_intensity(1, 0)


def test_linear_attention_flops_is_linear_and_beats_softmax_at_long_n():
    m = 266
    assert linear_attention_flops(2048, 768, 12, m) == 2 * linear_attention_flops(1024, 768, 12, m)
    assert linear_attention_flops(128, 768, 12, m) > attention_core_flops(128, 768, 12)
    assert linear_attention_flops(8192, 768, 12, m) < attention_core_flops(8192, 768, 12)


@pytest.mark.parametrize("bad", [dict(n=0), dict(n_heads=5), dict(batch=1.5)])
def test_bad_shapes(bad):
    args = dict(n=16, d_model=768, n_heads=12, d_ff=3072, batch=1) | bad
    with pytest.raises(ValueError):
        layer_flops(**args)
