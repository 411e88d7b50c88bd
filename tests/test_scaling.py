"""The scaling benchmark on a CPU: input checks, row schemas, each mechanism against exact attention, OOM rows."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from attnpaper.__main__ import main
from attnpaper.attention import LayerAttention
from attnpaper.attention.linear import favor_features
from attnpaper.attention.softmax import softmax_attention
from attnpaper.bench import kernels as K
from attnpaper.bench import model as S
from attnpaper.bench import scaling as SC
from attnpaper.experiment.bundle import _xz, unpack_xz

KERNEL_KEYS = {"mechanism", "seq_len", "batch", "pass", "ms", "tflops", "peak_mb", "status"}
MODEL_KEYS = {
    "variant",
    "seq_len",
    "batch_size",
    "step_mode",
    "step_time_ms_median",
    "gpu_busy_ms_per_step",
    "peak_memory_mb",
    "status",
}
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "argv, says",
    [
        (["kernels", "--lengths", "100", "--tokens", "256"], "dividing tokens per batch"),
        (["kernels", "--mechanisms", "eager", "fast"], "valid: eager, sdpa-flash"),
        (["kernels", "--passes", "bwd"], "valid: fwd, fwd_bwd"),
        (["kernels", "--repeats", "0"], "repeats must be an int >= 1"),
        (["model", "--variants", "turbo"], "valid: baseline, sdpa"),
        (["model", "--lengths", "128", "--tokens", "128"], "at least 2 sequences"),
        (["model", "--lengths", "1024", "--model", "bert-base-uncased"], "random-init alias"),
        (["model", "--lengths", "128"], "pass --data"),
        (["model", "--lengths", "128", "--data", "/nonexistent/lengths.npy"], "does not exist"),
        (["all", "--model-lengths", "1024", "--step-mode", "fast"], "valid: auto, eager, compiled, captured, whole"),
        (["model", "--lengths", "1024", "--paper-batch", "-1"], "--paper-batch must be an int >= 0, got -1"),
    ],
)
def test_bad_input_is_one_line_before_any_work(argv, says, capsys, monkeypatch):
    def expensive(*a, **k):
        raise AssertionError("measured before the input was checked")

    monkeypatch.setattr(K, "matmul_tflops", expensive)
    monkeypatch.setattr(S, "measure_step", expensive)
    assert main(["scaling", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and says in err


def test_exact_flops_follow_the_flashattention_papers():
    assert K.exact_flops(2, 128, "fwd") == 4 * 2 * 12 * 128**2 * 64
    assert K.exact_flops(2, 128, "fwd_bwd") == 3.5 * K.exact_flops(2, 128, "fwd")


def _linear_reference(q, k, v, mech):
    """The mechanism's own kernel phi(q).phi(k), written out as an N x N matrix, in float64. [B, N, H, D]."""
    q, k, v = (x.double().transpose(1, 2) for x in (q, k, v))  # [B, H, N, D]
    if mech.startswith("elu"):
        fq, fk = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    else:  # the library's features (stabilised, eps), in float64: checks the factorised products and layouts
        m = int(mech.removeprefix("favor+").removesuffix("-eager"))
        w = LayerAttention("linear", K.HEAD_DIM, feature_map="favor+", num_features=m).proj.double()  # same seed
        fq = favor_features(q * K.HEAD_DIM**-0.25, w, is_query=True)  # [B, H, N, M]
        fk = favor_features(k * K.HEAD_DIM**-0.25, w, is_query=False)
    a = fq @ fk.transpose(-1, -2)  # [B, H, N, N]
    return ((a @ v) / a.sum(-1, keepdim=True)).transpose(1, 2)


# favor+64 and favor+128 compile the same code as favor+266 with fewer features: slow tier
MECHANISM_NAMES = [
    pytest.param(n, marks=pytest.mark.slow) if n in ("favor+64", "favor+128") else n for n in K.MECHANISMS
]


@pytest.mark.parametrize("name", MECHANISM_NAMES)
def test_each_mechanism_computes_its_attention(name, monkeypatch):
    monkeypatch.setattr(K, "COMPILE_BACKEND", "aot_eager")  # the same graph, no kernel compilation
    mech = K.MECHANISMS[name]
    if not mech.available(CPU):
        pytest.skip(f"{name} needs a GPU")
    b, n = 2, 16
    q, k, v, _ = K.input_sets(b, n, CPU, rotations=1, dtype=torch.float32, seed=3)[0]
    out = mech.build(b, n, CPU)(q, k, v)
    assert out.shape == (b, n, K.HEADS, K.HEAD_DIM)
    if mech.exact:
        ref = softmax_attention(*(x.double().transpose(1, 2) for x in (q, k, v))).transpose(1, 2)
    else:
        ref = _linear_reference(q, k, v, name)
    err = (out.double() - ref).norm() / ref.norm()
    assert err < 1e-5, f"{name}: relative error {err:.2e}"


def test_kernel_rows_and_report(tmp_path, monkeypatch):
    monkeypatch.setattr(K, "COMPILE_BACKEND", "aot_eager")
    out = tmp_path / "k.json"
    # one mechanism of each kind (exact, exact through SDPA, unavailable on a CPU, linear), all eager: each
    # measured row costs a gc.collect (about a second), and compiling elu took most of the test's minute;
    # test_each_mechanism_computes_its_attention runs every mechanism, compiled ones included
    mechs = ["eager", "sdpa-flash", "sdpa-cudnn", "elu-eager"]
    rep = SC.run_kernels(
        [16, 32], 64, mechs, ["fwd", "fwd_bwd"], warmup=1, repeats=2, out=out, device="cpu", log=lambda s: None
    )
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(rep["rows"]))
    assert len(rep["rows"]) == 2 * len(mechs) * 2 and rep["tokens_per_batch"] == 64 and rep["git_sha"]
    for r in rep["rows"]:
        assert KERNEL_KEYS <= set(r) and r["batch"] * r["seq_len"] == 64
        if r["mechanism"] == "sdpa-cudnn":
            assert r["status"] == "unavailable" and r["ms"] is None  # a GPU backend, recorded as such
            continue
        assert r["status"] == "ok" and r["ms"] > 0
        assert (r["tflops"] is not None) == K.MECHANISMS[r["mechanism"]].exact


def test_out_of_memory_is_a_row(monkeypatch):
    def build(batch, seq_len, device):
        def run(q, k, v):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 96.00 GiB")

        return run

    mech = K.Mechanism("hungry", True, False, build)
    sets = K.input_sets(1, 8, CPU, rotations=1, dtype=torch.float32)
    rows = K.measure(mech, 1, 8, ["fwd", "fwd_bwd"], CPU, 1, 2, sets)
    assert [r["status"] for r in rows] == ["oom", "oom"] and "96.00 GiB" in rows[0]["error"]
    assert all(r["ms"] is None and r["tflops"] is None for r in rows)


def test_model_rows_oom_then_skipped(tmp_path, lengths_npy, monkeypatch):
    real = S.measure_step

    def measure(variant, *args, **kw):
        if variant == "sdpa" and args[1] >= 64:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(variant, *args, **kw)

    monkeypatch.setattr(S, "measure_step", measure)
    monkeypatch.setattr(S, "PROFILE_STEPS", 1)  # each model: 1 profiled step after its 2 timed ones, not 5
    out = tmp_path / "m.json"
    rep = SC.run_model(
        [32, 64, 128],
        256,
        ["sdpa", "flash"],
        "bert-tiny-random",
        steps=2,
        data=lengths_npy,
        out=out,
        device="cpu",
        log=lambda s: None,
        paper_batch=0,
    )
    status = {(r["variant"], r["seq_len"]): r["status"] for r in rep["rows"]}
    assert status == {
        ("sdpa", 32): "ok",
        ("flash", 32): "ok",
        ("sdpa", 64): "oom",
        ("flash", 64): "ok",
        ("sdpa", 128): "skipped",
        ("flash", 128): "ok",
    }
    for r in rep["rows"]:
        if r["status"] == "ok":
            assert MODEL_KEYS <= set(r) and r["step_time_ms_median"] > 0 and r["batch_size"] * r["seq_len"] == 256
            assert r["layout"] == ("packed" if r["variant"] == "flash" else "padded")
            assert r["step_mode"] == "eager"  # captured falls back on a CPU, and the row says so
    assert len(json.loads(out.read_text())["rows"]) == 6


def test_model_rows_at_the_papers_batch_up_to_512(tmp_path, lengths_npy, monkeypatch):
    """Besides constant tokens per batch, the sweep measures batch 32 at N <= 512 with the loop's buckets."""
    calls = []
    monkeypatch.setattr(
        S,
        "measure_step",
        lambda *a, **kw: (
            calls.append(a[:5]) or {"step_mode": "eager", "gpu_busy_ms_per_step": None, "step_time_ms_median": 1.0}
        ),
    )
    rep = SC.run_model([256, 512, 1024], 8192, ["flash"], "bert-tiny-random", 1, lengths_npy, log=lambda s: None)
    got = [(r["seq_len"], r["batch_size"], r["tokens_per_batch"]) for r in rep["rows"]]
    assert got == [(256, 32, 8192), (512, 16, 8192), (512, 32, 16384), (1024, 8, 8192)]  # 256: already 32
    assert [c[4] for c in calls] == [8192, 8192, None, 8192]  # None: the training loop's token buckets
    assert rep["paper_batch"] == 32


def test_batches_follow_imdb_lengths_then_full_length():
    imdb = np.array([10, 20, 40, 70])
    short = S.make_batches(32, 4, imdb, "padded", 128, n_batches=2)
    assert {len(b["input_ids"][0]) for b in short} == {32} and any((b["attention_mask"] == 0).any() for b in short)
    full = S.make_batches(1024, 2, imdb, "packed", 2048, n_batches=2)  # beyond 512 tokens: full length
    assert all(b["cu_seqlens"][:3].tolist() == [0, 1024, 2048] and b["input_ids"].numel() == 2048 for b in full)


def test_xz_bundle_round_trip(tmp_path):
    npz, weights = tmp_path / "b" / "ids.npz", tmp_path / "b" / "m" / "w.bin"
    weights.parent.mkdir(parents=True)
    np.savez_compressed(npz, ids=np.arange(1000, dtype=np.uint16), meta=np.array('{"a": 1}'))
    weights.write_bytes(bytes(range(256)) * 10)
    _xz(npz, tmp_path / "xz" / "ids.npz.xz")
    _xz(weights, tmp_path / "xz" / "m" / "w.bin.xz")
    (tmp_path / "xz" / "m" / "config.json").write_text("{}")
    got = unpack_xz(tmp_path / "xz", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in got) == ["ids.npz", "m/config.json", "m/w.bin"]
    with np.load(tmp_path / "out" / "ids.npz") as z:
        assert (z["ids"] == np.arange(1000)).all() and str(z["meta"]) == '{"a": 1}'
    assert (tmp_path / "out" / "m" / "w.bin").read_bytes() == weights.read_bytes()


def test_append_keeps_other_lengths_and_names_each_run(tmp_path, monkeypatch):
    out = tmp_path / "k.json"
    kw = dict(
        tokens=64,
        mechanisms=["eager", "elu-eager"],
        passes=["fwd"],
        warmup=0,
        repeats=1,
        out=out,
        device="cpu",
        log=lambda s: None,
    )
    SC.run_kernels([16, 32], **kw)
    rep = SC.run_kernels([32, 64], append=True, **kw)  # 32 measured again, 16 kept
    assert [(r["seq_len"], r["run"]) for r in rep["rows"] if r["mechanism"] == "eager"] == [(16, 0), (32, 1), (64, 1)]
    assert [r["lengths"] for r in rep["runs"]] == [[16, 32], [32, 64]]
    with pytest.raises(ValueError, match="tokens_per_batch=64"):
        SC.run_kernels([32], append=True, **{**kw, "tokens": 128})


def test_crossover_is_where_a_stays_below_b():
    from attnpaper.analysis.scaling import crossover, first_at_least

    idx = [128, 256, 512, 1024]
    a, b = pd.Series([5.0, 1.0, 3.0, 2.0], idx), pd.Series([4.0, 2.0, 2.5, 3.0], idx)
    assert crossover(a, b) == 1024  # below at 256, above again at 512
    assert crossover(b, a) is None
    assert crossover(a, pd.Series([9.0, 9.0, 9.0], idx[:3])) == 128  # b ran out of memory at 1024
    assert first_at_least(pd.Series([0.1, 0.5, 0.7], idx[:3]), 0.5) == 256
    assert first_at_least(pd.Series([0.1], [128]), 0.5) is None


def test_model_table_keeps_constant_tokens_apart_from_the_papers_batch():
    """At N <= 512 a model report has two rows per variant; a table takes one kind at a time."""
    from attnpaper.analysis import scaling as A

    def row(n, batch):
        return {"status": "ok", "variant": "sdpa", "seq_len": n, "batch_size": batch, "tokens_per_batch": n * batch}

    rows = [row(256, 32) | {"ms": 1.0}, row(512, 16) | {"ms": 2.0}, row(512, 32) | {"ms": 3.0}]
    report = {"kind": "scaling-model", "tokens_per_batch": 8192, "rows": rows}
    assert A.table(report, "ms", "variant")["sdpa"].to_dict() == {256: 1.0, 512: 2.0}
    assert A.table(report, "ms", "variant", batch=32)["sdpa"].to_dict() == {256: 1.0, 512: 3.0}
    old = {
        "kind": "scaling-model",
        "tokens_per_batch": 8192,
        "rows": [{"status": "ok", "variant": "sdpa", "seq_len": 512, "ms": 2.0}],
    }
    assert A.table(old, "ms", "variant")["sdpa"].to_dict() == {512: 2.0}  # before rows said their tokens


def test_the_sweeps_step_runs_float32_matmuls_as_tf32_on_a_gpu_as_training_does(monkeypatch):
    """FAVOR+'s w.x is float32 outside autocast: training runs it as TF32 (loop.float32_matmuls); the
    sweep's step must too, or its linear rows time a slower matmul than the runs do (f1312bb's did)."""
    seen, rows = [], []
    monkeypatch.setattr(S, "_measure_step", lambda *a: seen.append(torch.backends.cuda.matmul.allow_tf32) or {})
    before = torch.backends.cuda.matmul.allow_tf32  # a property of torch's, set and put back by hand
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for device in ("cuda", "cpu"):
            rows.append(S.measure_step("linear", "bert-tiny-random", 64, 2, 128, None, 1, device))
        assert seen == [True, False] and torch.backends.cuda.matmul.allow_tf32 is False  # restored after
        assert [r["float32_matmuls"] for r in rows] == ["tf32", "ieee"]  # each row says which it ran
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
