"""What the GPU's compute capability decides, checked on a CPU by playing a T4 (sm75) or an H100 (sm90):
kernel choice, precision="auto", the up-front refusals, and flash's fallbacks named or refused."""

from types import SimpleNamespace

import pytest
import torch

from attnpaper.attention import exact
from attnpaper.experiment.checks import check_device
from attnpaper.model.build import build_model, kernel_fallbacks
from attnpaper.training import loop
from attnpaper.training.config import SMOKE, RunConfig
from attnpaper.training.loop import precision_of

CUDA = torch.device("cuda")
FELL_BACK = "sdpa block-diagonal (cuda), padding-free" + exact.FALLBACK


def play(monkeypatch, major, minor):
    """Make torch report one CUDA GPU of compute capability major.minor (no CUDA call reaches the driver)."""
    props = SimpleNamespace(major=major, minor=minor, name=f"sm{major}{minor}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # as torch says


@pytest.fixture
def t4(monkeypatch):
    play(monkeypatch, 7, 5)


def test_auto_on_a_t4_picks_kernels_that_run_there(t4):
    """No FlashAttention-2 on sm75: packed attention takes SDPA with its block-diagonal mask (memory-
    efficient runs from sm50), padded attention SDPA's memory-efficient backend only."""
    for dtype in (torch.float16, torch.bfloat16):
        assert exact.choose_varlen_backend("auto", CUDA, 0.0, dtype) == "sdpa"
    assert exact.choose_backend("auto", CUDA) == "sdpa"
    q = SimpleNamespace(device=CUDA, dtype=torch.float16, shape=(2, 4, 128, 64))
    backends, name = exact._fused_backends(q, unmasked=True)
    assert backends == [torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION] and name == "sdpa EFFICIENT"


def test_auto_on_sm90_keeps_fused_kernels(monkeypatch):
    play(monkeypatch, 9, 0)
    monkeypatch.setattr(exact, "_HAS_VARLEN", True)
    assert exact.choose_varlen_backend("auto", CUDA, 0.0, torch.bfloat16) == "varlen"
    q = SimpleNamespace(device=CUDA, dtype=torch.bfloat16, shape=(2, 4, 128, 64))
    assert exact._fused_backends(q, unmasked=True)[1] == "sdpa FLASH_ATTENTION (FA2)"


def test_precision_auto_is_fp16_with_a_scaler_on_a_t4(t4):
    cfg = RunConfig()
    assert precision_of(cfg, CUDA) == "fp16"  # torch.cuda.is_bf16_supported() says True here (emulation)
    assert precision_of(cfg, torch.device("cpu")) == "fp32"
    assert precision_of(RunConfig(precision="fp32"), CUDA) == "fp32"


def test_precision_auto_is_bf16_from_sm80(monkeypatch):
    play(monkeypatch, 8, 0)
    assert precision_of(RunConfig(), CUDA) == "bf16"


@pytest.mark.parametrize(
    "params, words",
    [
        ({"precision": "bf16"}, "bad parameter precision='bf16': a GPU of compute capability 7.5 has no native bf16"),
        (
            {"variant": "flash", "flash_backend": "varlen"},
            "bad parameter flash_backend='varlen': FlashAttention-2 needs compute capability >= 8.0, this run "
            "is on a GPU of compute capability 7.5; valid here: auto, sdpa, math",
        ),
    ],
)
def test_what_a_t4_lacks_is_refused_up_front_in_one_line(t4, monkeypatch, params, words):
    monkeypatch.setattr(exact, "_HAS_VARLEN", True)  # the install has the kernel; the card does not
    with pytest.raises(ValueError) as err:
        check_device(RunConfig(**params), CUDA)
    assert str(err.value).startswith(words) and "\n" not in str(err.value)
    check_device(RunConfig(variant="flash"), CUDA)  # auto and fp16/auto pass


def test_kernels_asked_for_where_they_cannot_run_are_refused(t4):
    with pytest.raises(ValueError, match=r"needs a GPU of compute capability >= 8.0 \(FlashAttention-2\), not a GPU"):
        exact.choose_varlen_backend("varlen", CUDA, 0.0, torch.float16)
    with pytest.raises(ValueError, match="'flash_attn' needs a GPU of compute capability >= 8.0"):
        exact.choose_backend("flash_attn", CUDA)


def test_math_is_honoured_not_mapped_to_sdpa():
    """flash_backend='math' runs SDPA's math backend in both layouts, and the kernel's name says so."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(7, 2, 8, generator=g) for _ in range(3))
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    out, name = exact.varlen_attention(q, k, v, cu, 4, backend="math")
    ref, plain = exact.varlen_attention(q, k, v, cu, 4, backend="sdpa")
    assert name == "sdpa MATH block-diagonal (cpu), padding-free" and plain == "sdpa block-diagonal (cpu), padding-free"
    assert torch.allclose(out, ref, atol=1e-6)
    assert exact.choose_varlen_backend("math", CUDA, 0.0, torch.float16) == "math"
    qb, kb, vb = (x[None].transpose(1, 2) for x in (q, k, v))  # [1, H, N, D]
    assert exact.exact_attention(qb, kb, vb, backend="math")[1] == "sdpa MATH (cpu)"
    assert exact.exact_attention(qb, kb, vb)[1] == "sdpa (cpu)"  # auto on a CPU: unrestricted SDPA, as before


def test_only_math_restricts_sdpa_to_its_math_backend():
    from torch.nn.attention import SDPBackend, _cur_sdpa_kernel_backends

    with exact._only_math(True):
        assert _cur_sdpa_kernel_backends() == [SDPBackend.MATH]


def test_fallbacks_are_named_and_refused_when_strict(capsys):
    """A flash layer that ran SDPA's dense-mask fallback on a GPU: one line on stderr, or a ValueError."""
    model = build_model("bert-tiny-random", "hybrid", num_features=8)
    assert kernel_fallbacks(model) == []
    layer = next(m for m in model.modules() if getattr(m, "kind", None) == "exact")
    layer.kernels.update({FELL_BACK, "sdpa block-diagonal (cpu), padding-free"})
    assert kernel_fallbacks(model) == [FELL_BACK]
    cfg = RunConfig(variant="hybrid")
    loop.report_fallbacks(model, cfg, strict=False)
    assert capsys.readouterr().err.strip().splitlines() == [
        f"note: hybrid's exact layers run {FELL_BACK} (no fused varlen kernel here); "
        "the record's flash_fallback says so"
    ]
    with pytest.raises(ValueError, match="strict kernels: hybrid's exact layers run sdpa block-diagonal"):
        loop.report_fallbacks(model, cfg, strict=True)


@pytest.mark.parametrize("strict", [False, True])
def test_a_run_records_its_fallback_or_fails_before_training_when_strict(monkeypatch, strict):
    cfg = RunConfig(**{**SMOKE, "variant": "flash", "train_samples": 64, "max_steps": 2, "eval": False})
    monkeypatch.setattr(loop, "kernel_fallbacks", lambda model: [FELL_BACK])
    monkeypatch.setenv(loop.STRICT_ENV, "1" if strict else "0")
    steps = []
    real = loop.TrainStep.__call__
    monkeypatch.setattr(loop.TrainStep, "__call__", lambda self, b: steps.append(1) or real(self, b))
    if strict:
        with pytest.raises(ValueError, match="strict kernels"):
            loop.train(cfg, device="cpu", progress=False)
        assert steps == []  # refused before the first step
    else:
        assert loop.train(cfg, device="cpu", progress=False)["flash_fallback"] == [FELL_BACK]
        assert len(steps) == 2


def test_a_cpu_run_records_no_fallback():
    cfg = RunConfig(**{**SMOKE, "variant": "flash", "train_samples": 64, "max_steps": 1, "eval": False})
    out = loop.train(cfg, device="cpu", progress=False, strict_kernels=True)  # the CPU's SDPA is no fallback
    assert out["flash_fallback"] == [] and out["kernels"][0] == ["sdpa block-diagonal (cpu), padding-free"]


def test_kernel_set_sm75_makes_an_h100_choose_as_a_t4(monkeypatch):
    """kernel_set='sm75' (issue 39: the setup a T4 user had): inside the block an sm90 GPU answers as sm75,
    so padded attention takes SDPA's memory-efficient kernel, auto precision is fp16, and SDPA, transformers'
    own calls too, may use only memory-efficient and math; outside it, and for 'auto', nothing changes."""
    from torch.nn.attention import SDPBackend

    play(monkeypatch, 9, 0)
    q = SimpleNamespace(device=CUDA, dtype=torch.float16, shape=(2, 4, 128, 64))
    assert exact.has_fa2(CUDA) and exact._fused_backends(q, unmasked=True)[1] == "sdpa FLASH_ATTENTION (FA2)"
    with exact.kernel_set("sm75", CUDA):
        assert exact.capability(CUDA) == (7, 5) and not exact.has_fa2(CUDA) and not exact.has_bf16(CUDA)
        assert exact._fused_backends(q, unmasked=True) == ([SDPBackend.EFFICIENT_ATTENTION], "sdpa EFFICIENT")
        assert precision_of(RunConfig(), CUDA) == "fp16"
        assert not torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert exact.capability(CUDA) == (9, 0) and torch.backends.cuda.flash_sdp_enabled()
    with exact.kernel_set("auto", CUDA):
        assert exact.capability(CUDA) == (9, 0)
    play(monkeypatch, 7, 0)  # an older GPU than the set: its own capability stands
    with exact.kernel_set("sm75", CUDA):
        assert exact.capability(CUDA) == (7, 0)
    with pytest.raises(ValueError, match="unknown kernel_set 't4'; valid: auto, sm75"):
        with exact.kernel_set("t4", CUDA):
            pass


@pytest.mark.parametrize(
    "options,match",
    [
        ({"variant": "flash", "padding": "dynamic", "step_mode": "eager"}, "the flash run is packed: set layout"),
        ({"variant": "sdpa", "padding": "dynamic"}, "valid with step_mode eager only"),
        ({"variant": "sdpa", "kernel_set": "sm75", "precision": "bf16"}, "has no native bf16"),
        ({"variant": "flash", "kernel_set": "sm75", "flash_backend": "varlen"}, "has no FlashAttention-2"),
        ({"variant": "sdpa", "padding": "ragged"}, "valid: static, dynamic"),
    ],
)
def test_the_t4_setup_refuses_what_it_cannot_run(options, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**options).validate()


def test_the_t4_setup_leaves_other_runs_hashes_alone():
    """padding and kernel_set came after records existed: at their defaults the configuration hash is as before."""
    from attnpaper.training.config import hash_config

    cfg = RunConfig(variant="sdpa")
    before = {k: v for k, v in cfg.hashed_dict().items() if k not in ("padding", "kernel_set")}
    assert cfg.config_hash() == hash_config(before)
    t4 = RunConfig(variant="sdpa", padding="dynamic", step_mode="eager", kernel_set="sm75").validate()
    assert t4.config_hash() != cfg.config_hash()


def test_dynamic_padding_pads_each_batch_to_its_longest_review():
    """padding='dynamic' (eager steps): a batch is as wide as its longest review and as tall as its reviews,
    as DataCollatorWithPadding makes it; a run's batches then take several shapes, and it trains."""
    t4 = {**SMOKE, "variant": "sdpa", "padding": "dynamic", "step_mode": "eager", "kernel_set": "sm75"}
    cfg = RunConfig(**{**t4, "max_steps": 6, "test_samples": 40}).validate()
    short = loop.train_collator(cfg, 0, 1)([[5, 6, 7], [5, 6]], [1, 0])
    assert short["input_ids"].shape == (2, 3) and short["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    static = loop.train_collator(RunConfig(**{**t4, "padding": "static"}), 0, 1)([[5, 6, 7]], [1])
    assert static["input_ids"].shape == (cfg.batch_size, cfg.max_length)
    r = loop.train(cfg, device="cpu", progress=False)  # kernel_set changes nothing on a CPU
    assert r["batch_shapes"] > 1 and r["step_mode"] == "eager" and r["accuracy"] is not None
