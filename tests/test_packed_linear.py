"""Linear attention over packed sequences: equal to the padded kernel, no leakage, one graph, no host sync."""

import numpy as np
import pytest
import torch
from helpers import tiny_bert, tiny_distilbert, tiny_roberta
from torch._dynamo.utils import counters

import attnpaper
from attnpaper.attention import LayerAttention
from attnpaper.attention.linear import _SegmentProducts
from attnpaper.attention.plug import _linear
from attnpaper.training.batches import LINEAR_CHUNK, Collator, chunk_for, forward, real_tokens, slot_tokens
from attnpaper.training.config import SMOKE, RunConfig
from attnpaper.training.loop import train

# lengths 11, 3, 6, 1 and 16 (= max_length): partial chunks, a one-token sequence and a full one
SEQS = [[1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 2], [1, 7, 2], [1, 5, 6, 7, 8, 2], [1], list(range(3, 19))]
LABELS = [0, 1, 1, 0, 1]
H, D = 2, 8


def collate(seqs=SEQS, labels=LABELS, bucket=64, chunk=4, rows=6):
    """A static packed batch with chunk padding, a dummy row and (bucket 64) filler sequences."""
    return Collator("packed", max_length=16, batch_size=rows, static=True, bucket=bucket, chunk=chunk)(seqs, labels)


def padded_to_packed(x, b, lengths):
    """x [B, H, N, D] -> [1, H, T, D]: each row's real tokens where the packed batch holds them; the rest random."""
    out = torch.randn(1, x.shape[1], b["input_ids"].numel(), x.shape[-1], dtype=x.dtype)
    for row, (start, n) in enumerate(zip(b["cls_index"].tolist(), lengths)):
        out[0, :, start : start + n] = x[row, :, :n]
    return out


def real_rows(y, b, lengths):
    """The packed output [1, T, H, D] at each row's real tokens, as [sum of lengths, H, D]."""
    return torch.cat([y[0, s : s + n] for s, n in zip(b["cls_index"].tolist(), lengths)])


def layer(feature_map):
    return LayerAttention("linear", D, feature_map=feature_map, num_features=16, seed=3)


def packing(b):
    return b["chunk_seq"], b["segments"], b["key_mask"][None]


@pytest.mark.parametrize("feature_map", ["favor+", "elu"])
def test_packed_kernel_equals_padded(feature_map):
    """Outputs and the gradients of q, k, v at every real token, fillers and chunk padding included."""
    lengths = [len(s) for s in SEQS]
    b = collate()
    assert b["segments"] > len(SEQS) and b["key_mask"].sum() < b["input_ids"].numel()  # fillers, chunk padding
    g = torch.Generator().manual_seed(0)
    qkv = [torch.randn(len(SEQS), H, 16, D, generator=g) for _ in range(3)]
    mask = torch.arange(16)[None] < torch.tensor(lengths)[:, None]  # [B, N]
    lay = layer(feature_map)
    padded = [x.clone().requires_grad_() for x in qkv]
    packed = [padded_to_packed(x, b, lengths).requires_grad_() for x in qkv]
    y_pad = _linear(lay, *padded, mask, None)[0]  # [B, N, H, D]
    y_pack, name = _linear(lay, *packed, None, None, packing(b))
    assert name.endswith("padding-free (chunks of 4)")
    ref = y_pad[mask]
    assert torch.allclose(real_rows(y_pack, b, lengths), ref, atol=1e-6)
    w = torch.randn(ref.shape, generator=g)
    (ref * w).sum().backward()
    (real_rows(y_pack, b, lengths) * w).sum().backward()
    for p, q in zip(padded, packed):
        grad_pad = p.grad.transpose(1, 2)[mask]  # [sum of lengths, H, D]
        grad_pack = real_rows(q.grad.transpose(1, 2), b, lengths)
        assert torch.allclose(grad_pack, grad_pad, atol=1e-6)


def test_segment_products_gradcheck():
    """The hand-written backward against autograd's numerical gradients (float64)."""
    g = torch.Generator().manual_seed(1)
    chunk_seq = torch.tensor([0, 0, 2, 1, 1, 1])  # 6 chunks of 2 tokens in 3 sequences
    pq, pk = (torch.rand(1, 2, 12, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(1, 2, 12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: _SegmentProducts.apply(a, b, c, chunk_seq, 4), (pq, pk, v))


@pytest.mark.parametrize("feature_map", ["favor+", "elu"])
def test_no_cross_sequence_leakage(feature_map):
    """Changing one sequence's keys and values changes its outputs only; chunk padding and fillers change nothing."""
    b = collate()
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, H, b["input_ids"].numel(), D, generator=g) for _ in range(3))
    lay = layer(feature_map)
    base = _linear(lay, q, k, v, None, None, packing(b))[0]
    starts, lengths = b["cls_index"].tolist(), [len(s) for s in SEQS]
    k2, v2 = k.clone(), v.clone()
    k2[..., starts[2] : starts[2] + lengths[2], :] += 1.0
    v2[..., starts[2] : starts[2] + lengths[2], :] -= 2.0
    moved = _linear(lay, q, k2, v2, None, None, packing(b))[0]
    for i, (s, n) in enumerate(zip(starts, lengths)):
        same = torch.equal(moved[0, s : s + n], base[0, s : s + n])
        assert same == (i != 2), i
    junk = ~b["key_mask"] | (b["chunk_seq"].repeat_interleave(4) >= 6)  # chunk padding and filler tokens
    k3, v3 = k.clone(), v.clone()
    k3[..., junk, :] = 5.0
    v3[..., junk, :] = -7.0
    moved = _linear(lay, q, k3, v3, None, None, packing(b))[0]
    for s, n in zip(starts, lengths):
        assert torch.equal(moved[0, s : s + n], base[0, s : s + n])


@pytest.mark.parametrize("config", [tiny_bert, tiny_distilbert, tiny_roberta])
@pytest.mark.parametrize(
    "variant, options",
    [("linear", {"num_features": 16}), ("linear", {"feature_map": "elu"}), ("hybrid", {"num_features": 16})],
)
def test_packed_model_equals_padded(config, variant, options):
    """Logits, loss and every parameter's gradient: the packed batch against the padded one (float32)."""
    model = attnpaper.build_model(config(), variant, **options).eval()  # eval: DistilBERT's head dropout
    results = []
    for b in (Collator("padded", max_length=16, batch_size=6, static=True)(SEQS, LABELS), collate()):
        model.zero_grad()
        loss, logits = forward(model, b)
        loss.backward()
        results.append((loss.detach(), logits.detach()[: len(SEQS)], [p.grad.clone() for p in model.parameters()]))
    (loss_a, logits_a, grads_a), (loss_b, logits_b, grads_b) = results
    assert torch.allclose(logits_b, logits_a, atol=1e-5) and abs(loss_b - loss_a) < 1e-6
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(gb, ga, atol=1e-5)
    names = attnpaper.kernels_used(model)  # the padded run's kernel, then the packed one, in every layer
    linear = [n for n in names if any(k.startswith("linear") for k in n)]
    assert linear and all(any(k.endswith("padding-free (chunks of 4)") for k in n) for n in linear)
    exact = [n for n in names if n not in linear]
    assert len(exact) == (2 if variant == "hybrid" else 0)
    assert all(any("padding-free" in k and "block-diagonal" in k for k in n) for n in exact)


def test_changing_one_review_leaves_the_others_logits():
    model = attnpaper.build_model(tiny_bert(), "hybrid", num_features=16).eval()
    with torch.no_grad():
        base = forward(model, collate())[1]
        seqs = [list(s) for s in SEQS]
        seqs[0][3:7] = [40, 41, 42, 43]
        moved = forward(model, collate(seqs))[1]
    changed = (moved != base).any(-1)
    assert changed.tolist()[: len(SEQS)] == [True, False, False, False, False]


def test_chunked_collator_layout():
    b = Collator("packed", max_length=16, batch_size=4, static=True, bucket=8, chunk=4)(SEQS[:3], [0, 1, 1])
    # 11 real + 1 pad, 3 + 1, 6 + 2: each pad a sequence of its own; the dummy row repeats the first
    # review (label -100: the loss ignores it), so a short batch has about a full batch's tokens; a filler
    assert b["cu_seqlens"].tolist() == [0, 11, 12, 15, 16, 22, 24, 35, 36, 40]
    assert b["cls_index"].tolist() == [0, 12, 16, 24] and b["chunk_seq"].tolist() == [0, 0, 0, 1, 2, 2, 3, 3, 3, 4]
    keys = [True] * 11 + [False] + [True] * 3 + [False] + [True] * 6 + [False] * 2
    assert b["key_mask"].tolist() == keys + [True] * 11 + [False] + [True] * 4
    assert b["position_ids"].tolist() == [*range(11), 0, *range(3), 0, *range(6), 0, 1, *range(11), 0, *range(4)]
    assert b["segments"] == 5 and real_tokens(b) == 20 and slot_tokens(b) == 40
    assert b["labels"].tolist() == [0, 1, 1, -100]
    arrays = Collator("packed", max_length=16, batch_size=4, static=True, bucket=8, chunk=4)(
        [np.asarray(s, dtype=np.uint16) for s in SEQS[:3]], [0, 1, 1]
    )  # token ids as numpy arrays (a token cache's dtype) collate to the same tensors
    assert all(torch.equal(arrays[k], b[k]) if torch.is_tensor(b[k]) else arrays[k] == b[k] for k in b)
    big = collate(bucket=64)  # 5 reviews and a dummy row in chunks, then fillers in slots 6 and 7
    assert big["chunk_seq"].tolist()[-8:] == [4, 4, 4, 5, 5, 5, 6, 6] and big["segments"] == 6 + 4
    assert big["cu_seqlens"].numel() == 2 * 6 + 4 + 1 and real_tokens(big) == 37
    flash = Collator("packed", max_length=16, batch_size=4, static=True, bucket=8)(SEQS[:3], [0, 1, 1])
    assert "chunk_seq" not in flash and flash["cu_seqlens"].tolist() == [0, 11, 14, 20, 31, 32]  # chunk 1
    loose = Collator("packed", max_length=16, chunk=4)(SEQS[:3], [0, 1, 1])  # not static: no fillers, no dummy rows
    assert loose["input_ids"].numel() == 24 and loose["segments"] == 3 and loose["cu_seqlens"][-1] == 24


def test_chunk_choice_and_bad_chunks():
    assert chunk_for("linear", "packed", 512) == chunk_for("hybrid", "packed", 128) == LINEAR_CHUNK == 64
    assert chunk_for("linear", "packed", 16) == 16  # never longer than a sequence may be
    assert chunk_for("flash", "packed", 128) == chunk_for("linear", "padded", 128) == 1
    assert Collator("packed", max_length=100, chunk=16).bucket == 1024  # PACKED_BUCKET, whole chunks
    assert Collator("packed", max_length=1000, chunk=16).bucket == 2000  # 2 x max_length
    assert Collator("packed", max_length=100, chunk=16, bucket=208).bucket == 208
    with pytest.raises(ValueError, match=r"chunk must be an int in \[1, 16\] for the packed layout"):
        Collator("packed", max_length=16, chunk=32)
    with pytest.raises(ValueError, match=r"chunk must be an int in \[1, 1\] for the padded layout"):
        Collator("padded", max_length=16, chunk=4)
    with pytest.raises(ValueError, match="bucket must be a multiple of chunk=4"):
        Collator("packed", max_length=16, bucket=30, chunk=4)


def test_linear_on_unchunked_packed_batch_is_refused():
    model = attnpaper.build_model(tiny_bert(), "linear", num_features=16)
    b = Collator("packed", max_length=16, batch_size=4, static=True, bucket=8)(SEQS[:3], [0, 1, 1])
    with pytest.raises(ValueError, match=r"need chunk_seq, key_mask and segments: collate with Collator"):
        forward(model, b)


def test_run_config_allows_packed_linear_and_hybrid():
    for variant in ("flash", "linear", "hybrid"):
        assert RunConfig(variant=variant, layout="packed").validate().resolved_layout() == "packed"
    assert RunConfig(variant="linear").resolved_layout() == "packed"  # the default: padding-free
    assert RunConfig(variant="linear", layout="padded").validate().resolved_layout() == "padded"
    for changes, words in [
        ({"variant": "sdpa", "layout": "packed"}, "run flash, linear, hybrid only"),
        ({"variant": "linear", "layout": "packed", "bucket": 100}, "multiple of 64"),
        ({"variant": "hybrid", "max_length": 32, "bucket": 48}, "multiple of 32"),
    ]:
        with pytest.raises(ValueError, match=words):
            RunConfig(**changes).validate()


@pytest.mark.parametrize("variant", ["linear", "hybrid"])
def test_packed_never_syncs(variant):
    """On the meta device any .item(), bool(tensor) or data-dependent shape raises: none may occur."""
    model = attnpaper.build_model(tiny_bert(), variant, num_features=16).train().to("meta")
    b = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in collate().items()}
    loss = forward(model, b)[0]
    loss.backward()
    assert loss.device.type == "meta"


def test_packed_compiles_once_per_bucket():
    """fullgraph (no breaks), one graph per token bucket, none again for new batches of a seen bucket; = eager.

    Hybrid: its layers run both packed paths (varlen exact and chunked linear)."""
    model = attnpaper.build_model(tiny_bert(), "hybrid", num_features=16)

    def loss_and_grads(loss_fn, b):
        model.zero_grad()
        loss = loss_fn(b)
        loss.backward()  # AOTAutograd's compiled backward, for the compiled loss
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    def eager(b):
        return forward(model, b)[0]

    compiled = torch.compile(eager, backend="aot_eager", fullgraph=True, dynamic=False)
    batches = [
        collate(bucket=32),
        collate([SEQS[1], SEQS[3]] * 3, [1, 0] * 3, bucket=32),  # 60, 24, 48, 24 tokens:
        collate(SEQS[:2], LABELS[:2], bucket=32),  # (dummy rows repeat the reviews)
        collate([SEQS[3]] * 4, [0] * 4, bucket=32),
    ]  # buckets 64, 32
    shapes = {b["input_ids"].numel() for b in batches}
    assert shapes == {64, 32}
    torch._dynamo.reset()
    counters.clear()
    for b in batches:
        loss_c, grads_c = loss_and_grads(compiled, b)
        loss_e, grads_e = loss_and_grads(eager, b)
        assert torch.allclose(loss_c, loss_e, atol=1e-6)
        assert all(torch.allclose(c, e, atol=1e-6) for c, e in zip(grads_c, grads_e))
    assert counters["stats"]["unique_graphs"] == len(shapes), dict(counters["stats"])
    assert not counters["graph_break"]


@pytest.mark.parametrize("variant", ["linear", "hybrid"])
def test_training_run_with_packed_layout(variant):
    """RunConfig(layout='packed') trains and evaluates linear and hybrid padding-free, and says so."""
    cfg = RunConfig(
        **{
            **SMOKE,
            "variant": variant,
            "layout": "packed",
            "epochs": 1,
            "train_samples": 64,
            "test_samples": 32,
            "num_features": 16,
        }
    )
    res = train(cfg, device="cpu", progress=False)
    assert res["layout"] == "packed" and 0 <= res["accuracy"] <= 1
    linear = [k for layer in res["kernels"] for k in layer if k.startswith("linear")]
    chunk = min(LINEAR_CHUNK, cfg.max_length)
    assert linear and all(k.endswith(f"padding-free (chunks of {chunk})") for k in linear)
