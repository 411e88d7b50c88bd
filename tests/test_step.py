"""The training step: static batches, padding-free flash, no host syncs, one graph, eager = compiled."""

import pytest
import torch
from torch._dynamo.utils import counters

import attnpaper
from attnpaper.attention import elu_features, favor_features, linear_attention, orthogonal_gaussian
from attnpaper.training.batches import IGNORE, Collator, forward, real_tokens, slot_tokens, to_device
from attnpaper.training.config import SMOKE, RunConfig
from attnpaper.training.loop import train
from attnpaper.training.step import RECOMPILE_LIMIT, TrainStep, recompile_limit, resolve_step_mode
from attnpaper.variants import TABLE


def features(variant, m=16):
    """num_features=m for the variants that take it; the others refuse an option that would not apply."""
    return {"num_features": m} if "num_features" in TABLE[variant].options else {}


SEQS = [[1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 2], [1, 7, 2], [1, 5, 6, 7, 8, 2]]  # lengths 11, 3, 6


def test_padded_static_batch():
    b = Collator("padded", pad_id=0, max_length=16, batch_size=4, static=True)(SEQS, [0, 1, 1])
    assert b["input_ids"].shape == (4, 16) and b["labels"].tolist() == [0, 1, 1, IGNORE]
    assert b["attention_mask"].sum(1).tolist() == [11, 3, 6, 1]  # the dummy row holds one token
    assert real_tokens(b) == 20 and slot_tokens(b) == 64
    dynamic = Collator("padded", pad_id=0, max_length=16)(SEQS, [0, 1, 1])
    assert dynamic["input_ids"].shape == (3, 11)
    bucketed = Collator("padded", pad_id=0, max_length=16, batch_size=4, static=True, bucket=4)(SEQS[1:], [1, 1])
    assert bucketed["input_ids"].shape == (4, 8)


def test_packed_static_batch():
    b = Collator("packed", pad_id=0, max_length=16, batch_size=4, static=True, bucket=8)(SEQS, [0, 1, 1])
    assert b["input_ids"].shape == (32,)  # 20 real tokens and an 11-token dummy row, rounded up to the bucket
    assert b["cu_seqlens"].tolist() == [0, 11, 14, 20, 31, 32]  # the dummy row repeats review 0, then a filler
    big = Collator("packed", pad_id=0, max_length=16, batch_size=4, static=True, bucket=40)(SEQS, [0, 1, 1])
    assert big["cu_seqlens"].tolist() == [0, 11, 14, 20, 31, 40, 40, 40]  # fillers of <= 16 tokens each
    assert big["position_ids"][20:].tolist() == list(range(11)) + list(range(9))
    assert b["cu_seqlens"].dtype == torch.int32 and b["max_seqlen"] == 16
    assert b["cls_index"].tolist() == [0, 11, 14, 20] and b["labels"].tolist() == [0, 1, 1, IGNORE]
    assert b["position_ids"].tolist() == list(range(11)) + list(range(3)) + list(range(6)) + list(range(11)) + [0]
    assert b["input_ids"][b["cls_index"]].tolist() == [1, 1, 1, 1]
    assert real_tokens(b) == 20 and slot_tokens(b) == 32
    dynamic = Collator("packed", pad_id=0, max_length=16)(SEQS, [0, 1, 1])
    assert dynamic["cu_seqlens"].tolist() == [0, 11, 14, 20] and dynamic["max_seqlen"] == 16  # a bound


def test_bad_collator_arguments():
    with pytest.raises(ValueError, match="unknown layout 'ragged'; valid: padded, packed"):
        Collator("ragged")
    with pytest.raises(ValueError, match="bucket must be in"):
        Collator("padded", max_length=16, bucket=32)


@pytest.mark.parametrize("variant", ["flash", "hybrid"])
def test_packed_batch_without_cu_seq_lens_is_refused(tiny_config, variant, monkeypatch):
    """If transformers stopped handing cu_seq_lens_q to the attention, a packed row would be attended
    across every review in it: the attention refuses instead (here a stand-in drops the kwarg)."""
    from transformers import AttentionInterface

    from attnpaper.attention import plug

    def dropping(module, q, k, v, mask, **kw):
        return plug.attnpaper_attention(module, q, k, v, mask, **{n: x for n, x in kw.items() if n != "cu_seq_lens_q"})

    model = attnpaper.build_model(tiny_config, variant, **({"num_features": 8} if variant == "hybrid" else {})).eval()
    packed = Collator("packed", max_length=16, batch_size=4, static=True, bucket=8)(SEQS, [0, 1, 1])
    monkeypatch.setitem(AttentionInterface._global_mapping, plug.ATTN_NAME, dropping)
    with pytest.raises(ValueError, match="a packed batch reached .* without cu_seq_lens_q .*would run across every"):
        with torch.no_grad():
            forward(model, packed)


def test_flash_padding_free_equals_baseline_fp32(tiny_config):
    """Every layer on real tokens only, dummy rows and filler included: same logits and loss as padded eager."""
    base = attnpaper.build_model(tiny_config, "baseline").eval()
    flash = attnpaper.build_model(tiny_config, "flash").eval()
    padded = Collator("padded", max_length=16, batch_size=4, static=True)(SEQS, [0, 1, 1])
    packed = Collator("packed", max_length=16, batch_size=4, static=True, bucket=8)(SEQS, [0, 1, 1])
    with torch.no_grad():
        loss_b, logits_b = forward(base, padded)
        loss_f, logits_f = forward(flash, packed)
    assert torch.allclose(logits_f[:3], logits_b[:3], atol=1e-5) and abs(loss_f - loss_b) < 1e-5
    assert "padding-free" in attnpaper.kernels_used(flash)[0][0]


@pytest.mark.parametrize("variant", ["flash", "linear", "hybrid"])
def test_forward_and_backward_never_sync(variant, tiny_bert):
    """On the meta device any .item(), bool(tensor) or data-dependent shape raises: none may occur."""
    model = attnpaper.build_model(tiny_bert, variant, **features(variant)).train().to("meta")
    layout = "packed" if variant == "flash" else "padded"
    b = Collator(layout, max_length=16, batch_size=4, static=True)(SEQS, [0, 1, 1])
    b = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in b.items()}
    loss = forward(model, b)[0]
    loss.backward()
    assert loss.device.type == "meta"


def _step(config, variant, mode, layout=None):
    model = attnpaper.build_model(config, variant, **features(variant))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(model, opt, sched, scaler, "fp32", "cpu", mode, backend="aot_eager")
    layout = layout or ("packed" if variant == "flash" else "padded")
    bucket = 8 if layout == "packed" else None  # packed: several token counts; padded: always max_length
    return step, Collator(layout, max_length=16, batch_size=4, static=True, bucket=bucket)


BATCHES = [SEQS, SEQS[:2], [[1, 9, 9, 9, 2]] * 4, SEQS[1:]]


@pytest.mark.parametrize("variant", attnpaper.VARIANTS)
def test_compiled_step_one_graph_per_shape_equals_eager(variant, tiny_bert):
    """fullgraph=True fails on any graph break; each static shape is traced once, never again; the losses are
    eager's. Two layers, not four: tracing time grows with depth, and a third layer would trace like the second."""
    tiny_bert.num_hidden_layers = 2
    losses = {}
    for mode in ("eager", "compiled"):
        step, collate = _step(tiny_bert, variant, mode)
        counters.clear()
        losses[mode] = torch.stack([step(collate(s, [i % 2] * len(s))) for i, s in enumerate(BATCHES)])
    shapes = {collate(s, [0] * len(s))["input_ids"].shape for s in BATCHES}
    assert counters["stats"]["unique_graphs"] == len(shapes), dict(counters["stats"])  # packed: one per bucket
    assert not counters["graph_break"]
    assert torch.allclose(losses["compiled"], losses["eager"], atol=1e-5), losses
    for i, seqs in enumerate(BATCHES):  # the same shapes again: nothing new to compile
        step(collate(seqs, [i % 2] * len(seqs)))
    assert counters["stats"]["unique_graphs"] == len(shapes)


def test_recompile_limit_is_raised_inside_the_with_block_only():
    """Ten static shapes compile ten graphs inside (dynamo's own limit, 8, would stop at 8); outside, the
    process's limit is its own again, and a caller's higher limit is never lowered."""
    before, compiles = torch._dynamo.config.recompile_limit, []
    assert before < 10 <= RECOMPILE_LIMIT
    double = torch.compile(lambda x: x * 2, backend=lambda gm, _: compiles.append(gm) or gm.forward, dynamic=False)
    torch._dynamo.reset()
    with recompile_limit():
        for n in range(1, 11):
            double(torch.ones(n))
    assert len(compiles) == 10 and torch._dynamo.config.recompile_limit == before
    with torch._dynamo.config.patch(recompile_limit=4 * RECOMPILE_LIMIT), recompile_limit():
        assert torch._dynamo.config.recompile_limit == 4 * RECOMPILE_LIMIT
    torch._dynamo.reset()


def test_a_compiled_step_compiles_under_the_raised_limit_and_leaves_the_global_one(tiny_bert):
    tiny_bert.num_hidden_layers = 1
    before, seen = torch._dynamo.config.recompile_limit, []

    def backend(gm, _):  # what dynamo's limit is while it compiles the step's forward
        seen.append(torch._dynamo.config.recompile_limit)
        return gm.forward

    model = attnpaper.build_model(tiny_bert, "baseline")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    step = TrainStep(
        model, opt, sched, torch.amp.GradScaler("cpu", enabled=False), "fp32", "cpu", "compiled", backend=backend
    )
    step(Collator("padded", max_length=16, batch_size=4, static=True)(SEQS, [0, 1, 0]))
    assert seen and set(seen) == {RECOMPILE_LIMIT} and torch._dynamo.config.recompile_limit == before


def test_linear_fast_path_within_stated_tolerance():
    """bf16 products (the GPU path) stay within 1e-2 of the float64 reference; float32 within 1e-5."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 96, 64, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(2, 96, dtype=torch.bool)
    mask[1, 40:] = False
    proj = orthogonal_gaussian(266, 64, g).double()

    def favor(dtype):
        pq = favor_features(q.float() * 64**-0.25, proj.float(), is_query=True).to(dtype)
        pk = favor_features(k.float() * 64**-0.25, proj.float(), mask, is_query=False).to(dtype)
        return linear_attention(pq, pk, v.to(dtype), mask).double()

    ref = linear_attention(
        favor_features(q * 64**-0.25, proj, is_query=True),
        favor_features(k * 64**-0.25, proj, mask, is_query=False),
        v,
        mask,
    )
    elu_ref = linear_attention(elu_features(q), elu_features(k), v, mask)
    real = mask[:, None, :, None].expand_as(ref)

    def rel(a, b):
        return ((a - b)[real].norm() / b[real].norm()).item()

    assert rel(favor(torch.float32), ref) < 1e-5 and rel(favor(torch.bfloat16), ref) < 1e-2
    elu = linear_attention(elu_features(q).bfloat16(), elu_features(k).bfloat16(), v.bfloat16(), mask).double()
    assert rel(elu, elu_ref) < 1e-2


def test_captured_step_falls_back_on_cpu_with_one_line(capsys):
    assert resolve_step_mode("captured", "cpu") == "eager"
    assert capsys.readouterr().err.strip().splitlines() == [
        "step_mode='captured' needs a CUDA GPU of compute capability >= 7.0, not a CPU; running the eager step"
    ]
    assert resolve_step_mode("auto", "cpu", warn=False) == "eager"
    with pytest.raises(ValueError, match="unknown step_mode 'graphs'; valid: auto, eager, compiled, captured"):
        resolve_step_mode("graphs", "cpu")
    res = train(
        RunConfig(**{**SMOKE, "step_mode": "captured", "epochs": 1, "train_samples": 64}), device="cpu", progress=False
    )
    assert res["step_mode"] == "eager" and res["step_mode_requested"] == "captured" and res["compile_time_s"] == 0


def test_bad_step_settings_are_refused():
    for changes, words in [
        ({"step_mode": "graph"}, "valid: auto, eager, compiled, captured"),
        ({"layout": "packed"}, r"packed \(padding-free\) batches run flash, linear, hybrid only"),
        ({"bucket": 512}, "bucket"),
    ]:
        with pytest.raises(ValueError, match=words):
            RunConfig(**changes).validate()


@pytest.mark.cuda
def test_gpu_padding_free_flash_matches_baseline_bf16(tiny_config):
    """On a GPU the packed batch (with a filler and an empty dummy row) goes to the varlen FA2 kernel."""
    base = attnpaper.build_model(tiny_config, "baseline").cuda().eval()
    flash = attnpaper.build_model(tiny_config, "flash").cuda().eval()
    padded = to_device(Collator("padded", max_length=16, batch_size=4, static=True)(SEQS, [0, 1, 1]), "cuda")
    packed = to_device(Collator("packed", max_length=16, batch_size=4, static=True, bucket=8)(SEQS, [0, 1, 1]), "cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits_b, logits_f = forward(base, padded)[1].float(), forward(flash, packed)[1].float()
    assert ((logits_f[:3] - logits_b[:3]).norm() / logits_b[:3].norm()) < 2e-2
    assert "varlen" in attnpaper.kernels_used(flash)[0][0]


@pytest.mark.cuda
@pytest.mark.parametrize("variant", ["sdpa", "flash", "linear"])
def test_gpu_captured_step_one_graph_and_equals_eager(variant, tiny_bert):
    """Inductor + CUDA graphs: one graph for every batch, and the same losses as eager (bf16 tolerance)."""
    losses = {}
    for mode in ("eager", "captured"):
        model = attnpaper.build_model(tiny_bert, variant, **features(variant)).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        step = TrainStep(model, opt, sched, torch.amp.GradScaler("cuda", enabled=False), "bf16", "cuda", mode)
        collate = Collator(
            "packed" if variant == "flash" else "padded",
            max_length=16,
            batch_size=4,
            static=True,
            bucket=8 if variant == "flash" else None,
        )
        counters.clear()
        losses[mode] = torch.stack(
            [
                step(to_device(collate(s, [i % 2] * len(s)), torch.device("cuda"))).float()
                for i, s in enumerate(BATCHES * 2)
            ]
        )
        if mode == "captured":
            shapes = {collate(s, [0] * len(s))["input_ids"].shape for s in BATCHES}
            assert counters["stats"]["unique_graphs"] == len(shapes)
    assert torch.allclose(losses["captured"], losses["eager"], atol=3e-2), losses
