"""Plain functions for tests that need a configuration at collection time (parametrisation); the fixtures
in conftest.py return the same objects."""

import pytest
from transformers import BertConfig, DistilBertConfig, RobertaConfig

from attnpaper.experiment.records import REQUIRED

cuda = pytest.mark.cuda  # skipped, with the reason, on a machine without a CUDA GPU (conftest.py)


def tiny_bert():
    """A 4-layer BERT configuration, 32 wide, without dropout (build_model copies it, never mutates it)."""
    return BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
    )


def tiny_distilbert():
    """The DistilBERT counterpart of tiny_bert."""
    return DistilBertConfig(
        vocab_size=100, dim=32, n_layers=4, n_heads=4, hidden_dim=64, max_position_embeddings=64, dropout=0.0
    )


def tiny_roberta():
    """The RoBERTa counterpart of tiny_bert, padded with id 0 as the other tiny models (so its positions start
    at 1: RoBERTa numbers tokens from padding_idx + 1)."""
    return RobertaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        pad_token_id=0,
    )


def make_record(variant, seed, accuracy, config_hash="aaaaaaaaaaaa", status="ok", **extra):
    """A whole record of a GPU run as the sweep writes it (a failed one has no measurements); extra overrides."""
    rec = {k: None for k in REQUIRED}
    rec.update(
        variant=variant,
        seed=seed,
        model="m",
        max_length=128,
        epochs=3,
        batch_size=32,
        lr=5e-5,
        precision="bf16",
        train_samples=25000,
        test_samples=25000,
        accuracy=accuracy,
        train_time_s=100.0 + seed,
        peak_memory_mb=1000.0,
        tokens_per_s=1e5,
        device="NVIDIA Test GPU",
        kernels=[["transformers eager"]],
        versions={"torch": "x"},
        git_sha="abc",
        status=status,
        error=None if status == "ok" else "NonFiniteLoss: boom",
        config_hash=config_hash,
        notes={},
    )
    if status != "ok":
        rec.update(accuracy=None, train_time_s=None, peak_memory_mb=None, tokens_per_s=None)
    rec.update(extra)
    return rec


def campaign_plan() -> dict:
    """The committed campaign's plan as scripts/campaign_left.py holds it (what campaign.sh ran):
    {(length, arm): (records folder under results/h200, variants, seeds)}."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "campaign_left.py"
    spec = importlib.util.spec_from_file_location("campaign_left", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RUNS


def one_error_line(capsys, says):
    """The command line's stderr: one "error: ..." line, no traceback, that says ``says``; returned."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert says in err, err
    return err


def own_hash_cache(tmp_path, monkeypatch):
    """File hashes cached in this test's folder, not the user's ~/.cache (a module's autouse fixture)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def op_row(op="aten.mm", flops=0, nbytes=0, calls=1, elements=0, kernel=True, phase="forward"):
    """One profile row as profile-ops writes it."""
    return {
        "phase": phase,
        "op": op,
        "shapes": "",
        "calls": calls,
        "flops": flops,
        "bytes": nbytes,
        "elements": elements,
        "kernel": kernel,
    }


def op_profile(variants):
    """A synthetic op profile: variant -> (rows, steps)."""
    from attnpaper.analysis.roofline import PROFILE_KIND

    return {"kind": PROFILE_KIND, "variants": {v: {"rows": rows, "steps": s} for v, (rows, s) in variants.items()}}
