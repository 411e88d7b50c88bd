"""The whole-step mode: on a CPU its uncaptured step equals the eager step (losses, gradients, weights,
learning rates, checkpoints) and never syncs; on a GPU its CUDA graph equals the uncaptured step."""

import copy
import io

import pytest
import torch
from helpers import cuda, tiny_bert, tiny_distilbert
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import get_scheduler

import attnpaper
from attnpaper import variants as V
from attnpaper.training import graph as G
from attnpaper.training.batches import Collator, chunk_for, forward, to_device
from attnpaper.training.step import TrainStep, resolve_step_mode

SEQS = [[1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 2], [1, 7, 2], [1, 5, 6, 7, 8, 2]]
BATCHES = [SEQS, SEQS[:2], [[1, 9, 9, 9, 2]] * 4, SEQS[1:]]  # packed: two token counts; padded: one shape
SCHEDULES = {"linear": "linear", "constant": "constant_with_warmup"}  # as the loop names them


def make(
    config, variant, mode, clip=None, schedule="linear", device="cpu", precision="fp32", scaler=None, total=8, **kw
):
    """A step on a fresh model: the same initial weights for the same config and variant."""
    torch.manual_seed(0)
    options = {"num_features": 16} if "num_features" in V.variant(variant).options else {}
    model = attnpaper.build_model(config(), variant, **options).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=True)
    sched = get_scheduler(SCHEDULES[schedule], opt, num_warmup_steps=2, num_training_steps=total)
    scaler = scaler or torch.amp.GradScaler(torch.device(device).type, enabled=False)
    return TrainStep(model, opt, sched, scaler, precision, device, mode, max_grad_norm=clip, **kw)


def batches(variant, n=None, device=None, layout=None):
    """The variant's own layout (flash, linear, hybrid: packed) unless ``layout``; packed: two token counts."""
    n = len(BATCHES) if n is None else n
    layout = layout or V.variant(variant).layout
    chunk = min(4, chunk_for(variant, layout, 16))  # several chunks per sequence: the per-sequence sums
    collate = Collator(
        layout,
        max_length=16,
        batch_size=4,
        static=True,
        chunk=chunk,
        bucket=(8 if chunk == 1 else None) if layout == "packed" else None,
    )
    out = [collate(s, [i % 2] * len(s)) for i, s in enumerate((BATCHES * 4)[:n])]
    return [to_device(b, device) for b in out] if device else out


def run(step, data):
    """Losses, the gradients each optimizer step saw, the learning rate after each step, final weights."""
    grads, lrs = [], []
    params = list(step.model.parameters())
    hook = step.optimizer.register_step_pre_hook(
        lambda *a: grads.append([p.grad.clone() if p.grad is not None else None for p in params])
    )
    torch.manual_seed(1)
    losses = []
    for b in data:
        losses.append(step(b).clone())
        lrs.append(step.scheduler.get_last_lr()[0])
    hook.remove()
    return torch.stack(losses), grads, lrs, [p.detach().clone() for p in params]


def assert_same(a, b, atol):
    for x, y in zip(a, b):
        if isinstance(x, list):
            assert_same(x, y, atol)
        elif x is None or y is None:
            assert x is None and y is None
        else:
            assert torch.allclose(x, y, atol=atol, rtol=0), (x - y).abs().max()


# Every variant in its own layout on both models (and linear padded too); each variant sees clipping
# on one model and not the other, and the schedules alternate: all four (clip, schedule) pairs occur.
CASES = [
    (cfg, v, None, (None, 1.0)[j], ("linear", "constant")[(i + j) % 2])
    for i, v in enumerate(attnpaper.VARIANTS)
    for j, cfg in enumerate((tiny_bert, tiny_distilbert))
]
CASES.append((tiny_bert, "linear", "padded", 1.0, "linear"))


@pytest.mark.parametrize(
    "config,variant,layout,clip,schedule",
    CASES,
    ids=[f"{c.__name__}-{v}-{L or V.variant(v).layout}-clip{m}-{s}" for c, v, L, m, s in CASES],
)
def test_whole_step_equals_eager_fp32(config, variant, layout, clip, schedule):
    data = batches(variant, layout=layout)
    eager = run(make(config, variant, "eager", clip, schedule), data)
    step = make(config, variant, "whole", clip, schedule, backend=None, graph=False)
    whole = run(step, data)
    assert_same(whole[0], eager[0], 1e-6)  # losses
    assert len(whole[1]) == len(eager[1]) == len(data)
    assert_same(whole[1], eager[1], 1e-6)  # the gradients each AdamW step used
    assert whole[2] == pytest.approx(eager[2], rel=1e-6)  # the scheduler's rates, as get_last_lr reports them
    assert_same(whole[3], eager[3], 1e-6)  # weights
    assert step.scheduler.last_epoch == len(data) and step.mode == "whole"


def test_whole_step_compiled_equals_eager():
    """The forward compiled (aot_eager: the graphs Inductor would get), packed batches of two shapes."""
    data = batches("flash", 6)
    eager = run(make(tiny_bert, "flash", "eager", 1.0), data)
    whole = run(make(tiny_bert, "flash", "whole", 1.0, backend="aot_eager", graph=False), data)
    assert_same(whole[0], eager[0], 1e-5)
    assert_same(whole[3], eager[3], 1e-5)


@pytest.mark.parametrize("variant,kinds", [("baseline", 1), ("sdpa", 1), ("linear", 1), ("hybrid", 2)])
def test_whole_step_compiles_one_layer_per_kind(variant, kinds):
    """Regional compilation: one graph per layer kind and batch shape however many layers there are,
    and outside the step the model's layers run uncompiled (evaluation at other shapes never compiles)."""
    from torch._dynamo.utils import counters

    step = make(tiny_bert, variant, "whole", backend="aot_eager", graph=False)
    assert len(step.layers) == step.model.config.num_hidden_layers + 1  # the embeddings, then the layers
    counters.clear()
    step(batches(variant, 1)[0])
    assert counters["stats"]["unique_graphs"] == kinds + 1  # one per layer kind, one for the embeddings
    assert all(layer._compiled_call_impl is None for layer in step.layers)
    counters.clear()
    with torch.no_grad():
        forward(step.model, batches(variant, 2)[1])  # another shape, outside the step
    assert counters["stats"]["unique_graphs"] == 0


def varied_batches(variant, n=10):
    """Packed batches of three or more token counts (the shapes a 512-token run meets, in small)."""
    import random

    rng = random.Random(0)
    layout = V.variant(variant).layout
    chunk = min(4, chunk_for(variant, layout, 16))
    collate = Collator(layout, max_length=16, batch_size=4, static=True, chunk=chunk, bucket=8)  # several shapes
    seqs = [[[1] + [rng.randint(5, 90) for _ in range(rng.randint(1, 14))] + [2] for _ in range(4)] for _ in range(n)]
    return [collate(s, [j % 2 for j in range(4)]) for s in seqs]


@pytest.mark.parametrize("variant,kinds", [("flash", 1), ("linear", 1), ("hybrid", 2)])
def test_dynamic_whole_step_compiles_once_for_every_token_count(variant, kinds):
    """dynamic=True: one graph per layer kind (and one for the embeddings) however many token counts the
    batches have, where static shapes take one per count; the losses and weights are the static step's."""
    from torch._dynamo.utils import counters

    data = varied_batches(variant)
    shapes = {tuple(b["input_ids"].shape) for b in data}
    assert len(shapes) >= 3
    out, graphs = {}, {}
    for dynamic in (False, True):
        step = make(tiny_bert, variant, "whole", backend="aot_eager", graph=False, dynamic=dynamic, total=10)
        assert step.dynamic is dynamic
        counters.clear()
        out[dynamic] = run(step, data)
        graphs[dynamic] = counters["stats"]["unique_graphs"]
    assert graphs[False] == (kinds + 1) * len(shapes) and graphs[True] == kinds + 1, graphs
    assert_same(out[True][0], out[False][0], 1e-6)
    assert_same(out[True][3], out[False][3], 1e-6)


def test_planned_shapes_are_the_shapes_the_batches_take():
    """The loop counts a run's batch shapes from lengths alone (to choose a dynamic compile); they are
    the shapes the collated batches have, for each layout, padded and packed, static or not."""
    import random

    from attnpaper.training.data import Split
    from attnpaper.training.loop import planned_shapes

    rng = random.Random(1)
    split = Split([[1] + [7] * rng.randint(0, 40) + [2] for _ in range(90)], [0, 1] * 45)
    plan = [list(range(i, min(i + 8, 90))) for i in range(0, 90, 8)]  # the last batch is short
    for layout, chunk, static in [("padded", 1, True), ("padded", 1, False), ("packed", 1, True), ("packed", 4, True)]:
        collate = Collator(layout, max_length=48, batch_size=8, static=static, chunk=chunk, bucket=16)
        built = {tuple(collate([split.ids[i] for i in rows], [0] * len(rows))["input_ids"].shape) for rows in plan}
        assert planned_shapes(plan, split, collate, 0, 1) == built, layout


@pytest.mark.parametrize("config", [tiny_bert, tiny_distilbert])
def test_additive_mask_equals_transformers_eager_mask(config):
    """The baseline's whole step hands transformers' eager attention a [B, 1, 1, N] additive mask of its
    own (capturable); transformers passes a 4D mask through, and the scores get the same values."""
    from attnpaper.training.batches import Collator, additive_mask

    model = attnpaper.build_model(config(), "baseline", num_labels=2).eval()
    b = Collator("padded", max_length=16)([[2, 5, 6, 7, 3], [2, 8, 3], [2, *range(9, 19), 3]], [0, 1, 0])
    with torch.no_grad():
        plain, expanded = forward(model, b)[1], forward(model, b, expand_mask=True)[1]
    assert torch.equal(plain, expanded)
    mask = additive_mask(b["attention_mask"])
    assert mask.shape == (3, 1, 1, 12) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, torch.finfo(torch.float32).min}


def test_gradient_scaler_skips_like_eager():
    """fp16's path: a scale so large (and a classifier 100x too big) that some steps overflow and are skipped."""

    def step(mode, **kw):
        s = make(
            tiny_bert,
            "sdpa",
            mode,
            1.0,
            scaler=torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=2),
            **kw,
        )
        with torch.no_grad():
            s.model.classifier.weight.mul_(100)
        return s

    data = batches("sdpa", 8)
    eager_step, whole_step = step("eager"), step("whole", backend=None, graph=False)
    eager, whole = run(eager_step, data), run(whole_step, data)
    assert_same(whole[0], eager[0], 1e-6)
    assert_same(whole[3], eager[3], 1e-6)
    assert whole[2] == pytest.approx(eager[2], rel=1e-6)  # the schedule moves on skipped steps too
    taken = whole_step.optimizer.state[whole_step.model.classifier.weight]["step"]
    assert 0 < taken < len(data), "the test needs both skipped and taken steps"
    assert taken == eager_step.optimizer.state[eager_step.model.classifier.weight]["step"]
    assert whole_step.scaler.get_scale() == eager_step.scaler.get_scale()


def test_lr_table_follows_the_scheduler_across_chunks_and_seeks(monkeypatch):
    """A device table of 2 x 4 rows refilled as the counter moves; a loaded scheduler moves the counter."""
    monkeypatch.setattr(G, "LR_CHUNK", 4)
    for name in ("linear", "constant_with_warmup", "cosine"):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
        sched = get_scheduler(name, opt, num_warmup_steps=3, num_training_steps=20)
        ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        ref = get_scheduler(name, ref_opt, num_warmup_steps=3, num_training_steps=20)
        used = []
        opt.register_step_pre_hook(lambda o, *a, used=used: used.append(float(o.param_groups[0]["lr"])))

        def body(batch, model=model, opt=opt):
            loss = model(batch["x"]).square().mean()
            loss.backward()
            opt.step()
            return loss

        step = G.WholeStep(body, opt, sched, "cpu", graph=False)
        expected = []
        for k in range(23):
            expected.append(ref.get_last_lr()[0])
            step({"x": torch.randn(2, 3)})
            ref_opt.step()
            ref.step()
            assert sched.get_last_lr() == pytest.approx(ref.get_last_lr(), rel=1e-6) and sched.last_epoch == k + 1
            assert float(opt.param_groups[0]["lr"]) == pytest.approx(ref.get_last_lr()[0], rel=1e-6, abs=1e-12)
        assert used == pytest.approx(expected, rel=1e-6, abs=1e-12)
        sched.load_state_dict({**sched.state_dict(), "last_epoch": 6})  # resume at step 6
        step({"x": torch.randn(2, 3)})
        assert used[-1] == pytest.approx(0.1 * ref.lr_lambdas[0](6), rel=1e-6, abs=1e-12)
        assert sched.last_epoch == 7 and int(step.schedule.step_t) == 7


def test_bad_whole_settings_are_refused(capsys):
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="needs an optimizer made with fused=True"):
        G.WholeStep(lambda b: None, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), "cpu", graph=False)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    with pytest.raises(ValueError, match="tabulates a LambdaLR schedule .* not StepLR"):
        G.WholeStep(lambda b: None, opt, torch.optim.lr_scheduler.StepLR(opt, 2), "cpu", graph=False)
    with pytest.raises(ValueError, match="needs a CUDA device, not cpu"):
        G.WholeStep(lambda b: None, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), "cpu", graph=True)
    assert resolve_step_mode("whole", "cpu") == "eager"
    assert capsys.readouterr().err.strip().splitlines() == [
        "step_mode='whole' needs a CUDA GPU of compute capability >= 7.0, not a CPU; running the eager step"
    ]
    step = make(tiny_bert, "sdpa", "whole", ddp=object(), backend=None)  # any non-None ddp: the fallback happens first
    assert step.mode == "captured" and step.whole is None
    assert "running the captured step" in capsys.readouterr().err


def saved_state(step):
    """What the loop saves, through torch.save and back (map_location=cpu)."""
    buf = io.BytesIO()
    torch.save({"model": step.model.state_dict(), "step": step.state_dict(), "rng": torch.get_rng_state()}, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=False)


def dropout_bert():
    """tiny_bert with hidden dropout 0.1: its losses depend on the RNG state."""
    c = tiny_bert()
    c.hidden_dropout_prob = 0.1
    return c


def test_checkpoint_round_trip():
    """3 steps, save, load into a fresh step, 3 more = 6 uninterrupted steps (dropout on: RNG restored; without
    restoring it the last 3 differ, so the comparison can fail)."""
    data = batches("sdpa", 6)
    whole = dict(backend=None, graph=False)
    full = run(make(dropout_bert, "sdpa", "whole", 1.0, **whole), data)
    first = make(dropout_bert, "sdpa", "whole", 1.0, **whole)
    head = run(first, data[:3])
    state = saved_state(first)
    assert isinstance(state["step"]["optimizer"]["param_groups"][0]["lr"], float)  # as the eager step saves it
    assert state["step"]["optimizer"]["param_groups"][0]["capturable"] is False
    assert state["step"]["scheduler"]["last_epoch"] == 3
    tails = {}
    for restored in (False, True):
        fresh = make(dropout_bert, "sdpa", "whole", 1.0, **whole)
        loaded = copy.deepcopy(state)  # AdamW takes the loaded moments as they are and steps them in place
        torch.nn.init.normal_(next(fresh.model.parameters()))  # a different start: the load must undo it
        fresh.model.load_state_dict(loaded["model"])
        fresh.load_state_dict(loaded["step"])
        if restored:
            torch.set_rng_state(loaded["rng"])
        tails[restored] = torch.stack([fresh(b).clone() for b in data[3:]])
    assert not torch.equal(tails[False], full[0][3:])  # other dropout masks: other losses
    assert torch.equal(torch.cat([head[0], tails[True]]), full[0])
    assert all(torch.equal(p, q) for p, q in zip(fresh.model.parameters(), full[3]))
    assert fresh.scheduler.last_epoch == 6 and fresh.scheduler.get_last_lr() == full[2][-1:]


def test_load_copies_into_the_tensors_the_step_reads():
    """Loading into a step that has run (as a recorded graph would) keeps every state tensor in place."""
    data = batches("sdpa", 6)
    whole = dict(backend=None, graph=False)
    full = run(make(tiny_bert, "sdpa", "whole", 1.0, **whole), data)
    step = make(tiny_bert, "sdpa", "whole", 1.0, **whole)
    torch.manual_seed(1)
    for b in data[:3]:
        step(b)
    state = saved_state(step)
    for b in data[3:5]:  # run on, then go back to step 3
        step(b)
    opt = step.optimizer
    before = {(id(p), k): v for p, s in opt.state.items() for k, v in s.items()}
    lr = opt.param_groups[0]["lr"]
    step.model.load_state_dict(state["model"])
    step.load_state_dict(state["step"])
    torch.set_rng_state(state["rng"])
    after = {(id(p), k): v for p, s in opt.state.items() for k, v in s.items()}
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert opt.param_groups[0]["lr"] is lr
    tail = torch.stack([step(b).clone() for b in data[3:]])
    assert torch.equal(tail, full[0][3:])
    assert all(torch.equal(p, q) for p, q in zip(step.model.parameters(), full[3]))


class NoHostSync(TorchDispatchMode):
    """Raise on any op that makes the host wait for a value: .item(), bool(), data-dependent shapes."""

    SYNCING = {
        torch.ops.aten._local_scalar_dense,
        torch.ops.aten.nonzero,
        torch.ops.aten.masked_select,
        torch.ops.aten.equal,
        torch.ops.aten.is_nonzero,
        torch.ops.aten._unique2,
        torch.ops.aten.unique_dim,
        torch.ops.aten.unique_consecutive,
    }

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.SYNCING:
            raise AssertionError(f"host sync: {func}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("variant", ["sdpa", "flash", "linear"])
def test_whole_step_never_syncs(variant):
    """Forward, backward, scaler, clipping, AdamW, the schedule and the loss copy: no op waits for the device.

    sdpa included: the whole step hands it a 4D mask (batches.expanded_mask), so transformers never asks
    whether the [B, N] mask has padding (``padding_mask.all()``, a sync).
    """
    step = make(tiny_bert, variant, "whole", 1.0, scaler=torch.amp.GradScaler("cpu"), backend=None, graph=False)
    data = batches(variant, 5)
    with NoHostSync():
        losses = [step(b) for b in data]
    assert len(losses) == 5
    with pytest.raises(AssertionError, match="host sync"), NoHostSync():  # the detector does detect
        bool(losses[0] > 0)


# ---- on a GPU ----------------------------------------------------------------------------------


def quiet_bert():
    """tiny_bert without dropout: a graph and an uncaptured step then compute the same function."""
    c = tiny_bert()
    c.attention_probs_dropout_prob = 0.0
    return c


def frozen_step(mode):
    """A step on dropout_bert (no classifier dropout: only the compiled layers drop) whose learning rate is 0:
    every call sees the same weights, so its loss on one batch varies with the dropout masks alone."""
    torch.manual_seed(0)
    config = dropout_bert()
    config.num_hidden_layers, config.classifier_dropout = 2, 0.0
    model = attnpaper.build_model(config, "sdpa").to("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return TrainStep(model, opt, sched, torch.amp.GradScaler("cuda", enabled=False), "fp32", "cuda", mode)


@cuda
def test_gpu_dropout_masks_change_every_replay_as_in_eager():
    """Replays of the recorded step draw new dropout masks (the graph does not replay the recorded ones), and
    its losses have the eager step's mean and spread: the same dropout, only other draws."""
    n = 200
    batch = batches("sdpa", 1, device="cuda")[0]
    losses = {}
    for mode in ("whole", "eager"):
        step = frozen_step(mode)
        torch.manual_seed(1)
        calls = [step(batch).clone() for _ in range(G.UNCAPTURED_CALLS + n)]
        losses[mode] = torch.stack(calls[G.UNCAPTURED_CALLS :]).double().cpu()  # whole: replays only
        if mode == "whole":
            assert step.whole.graphs == 1
    whole, eager = losses["whole"], losses["eager"]
    assert len(set(whole.tolist())) > 0.9 * n, whole[:8]  # masks fixed at recording: one loss, n times
    assert eager.std() > 0 and whole.std() > 0
    se = (whole.var() / n + eager.var() / n).sqrt()
    assert (whole.mean() - eager.mean()).abs() < 4 * se, (whole.mean(), eager.mean(), se)  # Welch: p ~ 6e-5
    assert 0.5 < whole.var() / eager.var() < 2, (whole.var(), eager.var())  # F(199, 199): 99.9% in [0.63, 1.58]


@cuda
@pytest.mark.parametrize("variant", ["baseline", "sdpa", "flash", "linear"])
def test_gpu_graph_equals_uncaptured_bf16(variant):
    """Inductor's forward, recorded with backward, clipping, AdamW and the schedule, replayed per shape."""
    data = batches(variant, 12, device="cuda")  # every shape: 2 uncaptured calls, recorded, replayed
    out = {}
    for graph in (False, True):
        step = make(quiet_bert, variant, "whole", 1.0, device="cuda", precision="bf16", graph=graph, total=12)
        out[graph] = run(step, data)
    shapes = {tuple(b["input_ids"].shape) for b in data}
    assert step.whole.graphs == len(shapes)
    assert torch.allclose(out[True][0], out[False][0], atol=1e-2), (out[True][0], out[False][0])
    assert out[True][2] == out[False][2]  # learning rates
    assert_same(out[True][3], out[False][3], 5e-3)


@cuda
@pytest.mark.parametrize("variant", ["flash", "linear", "hybrid"])
def test_gpu_dynamic_graph_equals_static(variant):
    """One Inductor compile for every token count (symbolic sizes), one CUDA graph per count: the losses
    and weights are those of one compile per count.

    Compared in fp32, where the two compiles' kernels round alike (on a CPU, after 12 steps: weights within
    6e-7). In bf16 only the first step is compared (the same weights, so only rounding differs) and the
    losses: AdamW moves a weight by about its learning rate whatever the gradient's size, so a gradient
    near zero whose sign the two roundings decide differently moves the weights apart by up to 2e-3 a step
    (bf16 on a CPU: 4.5e-3 after 12 steps, first-step gradients within 2.4e-7). On an H100 the bf16
    version of this test (weights within 5e-3) failed for all three variants at 7e213ed; the call's deadline
    cut its report, so which assertion failed is not known."""
    data = [to_device(b, torch.device("cuda")) for b in varied_batches(variant, 12)]
    for precision in ("fp32", "bf16"):
        out = {}
        for dynamic in (False, True):
            kw = dict(device="cuda", precision=precision, dynamic=dynamic, total=12)
            step = make(quiet_bert, variant, "whole", 1.0, **kw)
            out[dynamic] = run(step, data)
            assert step.whole.graphs == len({tuple(b["input_ids"].shape) for b in data}), (precision, dynamic)
        (loss_d, grads_d, _, weights_d), (loss_s, grads_s, _, weights_s) = out[True], out[False]
        if precision == "fp32":
            assert torch.allclose(loss_d, loss_s, atol=1e-4), (loss_d, loss_s)
            assert_same(weights_d, weights_s, 1e-4)
        else:
            assert torch.allclose(loss_d, loss_s, atol=1e-2), (loss_d, loss_s)
            assert_same(grads_d[0], grads_s[0], 1e-3)  # the first step: the same weights


@cuda
@pytest.mark.parametrize(
    "variant,precision",
    [("baseline", "bf16"), ("sdpa", "bf16"), ("flash", "bf16"), ("sdpa", "fp16"), ("baseline", "fp16")],
)
def test_gpu_replays_never_sync(variant, precision):
    """After recording, a call is a pinned copy and a replay: CUDA's sync debug mode raises on any sync."""
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    step = make(quiet_bert, variant, "whole", 1.0, device="cuda", precision=precision, scaler=scaler, total=40)
    data = [{k: v.pin_memory() if torch.is_tensor(v) else v for k, v in b.items()} for b in batches(variant, 16)]
    for b in data[:12]:
        step(b)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step(b) for b in data]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.whole.graphs == len({tuple(b["input_ids"].shape) for b in data})
    assert torch.isfinite(torch.stack(losses)).all() and not step.nonfinite


@cuda
def test_gpu_checkpoint_loads_into_recorded_graph():
    """Save after 3 steps, run on (replays), load: the same graph then continues as the uninterrupted run."""
    data = batches("sdpa", 6, device="cuda")
    kw = dict(device="cuda", precision="bf16", total=8)
    full = run(make(quiet_bert, "sdpa", "whole", 1.0, **kw), data)
    step = make(quiet_bert, "sdpa", "whole", 1.0, **kw)
    for b in data[:3]:
        step(b)  # the third call records the graph
    state = saved_state(step)
    for b in data[3:5]:
        step(b)
    step.model.load_state_dict(state["model"])
    step.load_state_dict(state["step"])
    tail = torch.stack([step(b).clone() for b in data[3:]])
    assert step.whole.graphs == 1
    assert torch.allclose(tail, full[0][3:], atol=1e-2), (tail, full[0][3:])
    assert_same(list(step.model.parameters()), full[3], 5e-3)


@cuda
def test_gpu_training_loop_stops_on_a_non_finite_loss_in_whole_mode():
    """The loop reads the graph's own non-finite flag (no check of its own per step) and still stops."""
    from attnpaper.training.config import SMOKE, RunConfig
    from attnpaper.training.loop import NonFiniteLoss, train

    cfg = RunConfig(**{**SMOKE, "lr": 1e30, "epochs": 1, "train_samples": 64, "eval": False, "step_mode": "whole"})
    with pytest.raises(NonFiniteLoss, match="non-finite loss by step"):
        train(cfg, device="cuda", progress=False)


def test_returned_losses_stay_valid_and_no_gradients_are_kept_between_steps():
    """Each call returns a loss of its own (an old one is not overwritten by later calls, however many),
    and p.grad is None after a call, uncaptured as after a replay and after the eager step."""
    step = make(tiny_bert, "sdpa", "whole", backend=None, graph=False, total=12)
    data = batches("sdpa", 6)
    first = step(data[0])
    kept = first.clone()
    assert first._base is None and first.data_ptr() != step.whole.loss.data_ptr()  # no view of what the step writes
    assert all(p.grad is None for p in step.model.parameters())
    for b in data[1:]:
        step(b)
    assert torch.equal(first, kept)
    assert all(p.grad is None for p in step.model.parameters())


def test_whole_step_refuses_eval_mode():
    step = make(tiny_bert, "sdpa", "whole", backend=None, graph=False)
    step.model.eval()
    with pytest.raises(ValueError, match=r"records the training step, and the model is in eval mode.*model.train\(\)"):
        step(batches("sdpa", 1)[0])
    assert step.whole.shapes == {}  # nothing ran, nothing recorded
    step.model.train()
    step(batches("sdpa", 1)[0])


def test_capturable_non_fused_optimizer_with_fp16_scaler_is_refused_up_front():
    """A capturable AdamW passes the capture check, but the fp16 scaler would call .item() inside capture."""
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, capturable=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    with pytest.raises(ValueError, match=r"enabled gradient scaler \(fp16\) needs fused=True.*valid: fused=True"):
        G.WholeStep(lambda b: None, opt, sched, "cpu", graph=True, scaler=scaler)
    assert "capturable" in opt.param_groups[0] and opt.param_groups[0]["capturable"] is True  # as made
    with pytest.raises(ValueError, match="needs a CUDA device"):  # without a scaler the next check speaks
        G.WholeStep(lambda b: None, opt, sched, "cpu", graph=True, scaler=torch.amp.GradScaler("cpu", enabled=False))


@cuda
@pytest.mark.parametrize("variant", ["sdpa", "linear"])
def test_gpu_a_run_leaves_nothing_allocated_for_the_next_in_its_process(tmp_path, variant):
    """run_and_record's allocated_after_mb (what sweep --reuse-kernel checks) counts what the run left alive:
    after a whole-step run on the GPU, nothing beyond what the process held before it (cuBLAS's workspaces,
    32 MiB a stream on an H100, let go on both sides), and gc reaches no CUDA tensor of the run."""
    from attnpaper.experiment.run import allocated_after, run_and_record
    from attnpaper.training.config import SMOKE, RunConfig

    before = allocated_after() or 0.0
    cfg = RunConfig(**{**SMOKE, "variant": variant, "epochs": 1, "train_samples": 128, "test_samples": 64})
    rec = run_and_record(cfg, tmp_path, device="cuda", progress=False)
    assert rec["step_mode"] == "whole", rec["step_mode"]
    left = rec["allocated_after_mb"], rec.get("live_tensors_after_mb")
    assert left[0] - before < 1.0, (before, left)
