"""Checkpoints that travel: opened by processes that never imported attnpaper, or that do not have it.

baseline and sdpa save as plain transformers models; flash, linear and hybrid save an auto_map and
attnpaper_model.py, so trust_remote_code=True and pipeline(...) load them where attnpaper is installed
and name `pip install attnpaper` where it is not. Each fresh process is one subprocess for all folders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, DistilBertConfig, RobertaConfig

import attnpaper
from attnpaper.model.auto import REMOTE_FILE, AttnpaperBertConfig

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "bert": BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "distilbert": DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64),
    "roberta": RobertaConfig(  # padded with MiniLM's [PAD] = 0, as the random-init RoBERTa alias
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, pad_token_id=0
    ),
}
TEXTS = ["a fine film, wonderful and moving", "dull, and far too long"]
PLAIN = ("baseline", "sdpa")


def folders_of(root: Path) -> dict:
    """{name: folder} for every variant over a tiny BERT, and baseline/linear over a tiny DistilBERT and RoBERTa."""
    return {
        f"{kind}-{v}": root / f"{kind}-{v}"
        for kind in MODELS
        for v in attnpaper.VARIANTS
        if kind == "bert" or v in ("baseline", "linear")
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Saved folders (weights, config, tokenizer) and each model's logits on TEXTS before saving."""
    root = tmp_path_factory.mktemp("travel")
    tok = AutoTokenizer.from_pretrained(attnpaper.offline_model_dir())
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    logits = {}
    for name, folder in folders_of(root).items():
        kind, variant = name.split("-")
        opts = {"num_features": 16, "seed": 2} if variant in ("linear", "hybrid") else {}
        model = attnpaper.build_model(MODELS[kind], variant, **opts).eval()
        with torch.no_grad():
            logits[name] = model(**batch).logits.tolist()
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return root, logits


def fresh(code: str, tmp_path, attnpaper_installed=True) -> dict:
    """Run ``code`` in a new python that never imports attnpaper itself (or cannot: blocked); its JSON."""
    block = "" if attnpaper_installed else "import sys; sys.modules['attnpaper'] = None  # as if not installed\n"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [sys.executable, "-c", block + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"stderr": proc.stderr}


LOAD = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
root, names, texts = sys.argv[1:] if len(sys.argv) > 3 else (ROOT_, NAMES_, TEXTS_)
out = {"attnpaper_before": "attnpaper" in sys.modules}
for name in names:
    folder = f"{root}/{name}"
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits.tolist()
    classify = pipeline("text-classification", model=folder, trust_remote_code=True)
    model.save_pretrained(f"{root}/resaved-{name}")
    out[name] = {"class": f"{type(model).__module__}.{type(model).__name__}", "logits": logits,
                 "attn": model.config._attn_implementation, "labels": model.config.id2label,
                 "pipeline": [r["label"] for r in classify(texts)]}
out["attnpaper_after"] = "attnpaper" in sys.modules
print(json.dumps(out))
"""


def load_code(root, names) -> str:
    return LOAD.replace("ROOT_", repr(str(root))).replace("NAMES_", repr(names)).replace("TEXTS_", repr(TEXTS))


@pytest.mark.slow  # a fresh python importing torch and transformers: 15-35 s here
def test_variants_load_with_trust_remote_code_and_pipeline_in_a_fresh_process(saved, tmp_path):
    root, logits = saved
    names = [n for n in folders_of(root) if n.split("-")[1] not in PLAIN]
    out = fresh(load_code(root, names), tmp_path)
    assert out["attnpaper_before"] is False and out["attnpaper_after"] is True  # imported by attnpaper_model.py
    for name in names:
        got = out[name]
        assert got["class"].startswith("attnpaper.model.auto.Attnpaper"), got["class"]
        assert got["attn"] == "attnpaper" and got["labels"] == {"0": "negative", "1": "positive"}
        assert torch.equal(torch.tensor(got["logits"]), torch.tensor(logits[name])), name  # bitwise
        assert set(got["pipeline"]) <= {"negative", "positive"} and len(got["pipeline"]) == len(TEXTS)
        resaved = sorted(p.name for p in (root / f"resaved-{name}").iterdir())
        assert REMOTE_FILE in resaved and "auto.py" not in resaved, resaved  # no copy of the package's auto.py


@pytest.mark.slow  # a fresh python importing torch and transformers: 15-35 s here
def test_baseline_and_sdpa_are_plain_transformers_models(saved, tmp_path):
    root, logits = saved
    names = [n for n in folders_of(root) if n.split("-")[1] in PLAIN]
    for name in names:
        config = json.loads((root / name / "config.json").read_text())
        assert config["model_type"] == name.split("-")[0] and "auto_map" not in config
        assert not (root / name / REMOTE_FILE).exists()
    out = fresh(load_code(root, names), tmp_path, attnpaper_installed=False)  # attnpaper cannot even be imported
    for name in names:
        got = out[name]
        assert got["class"].startswith("transformers.models."), got["class"]
        assert got["attn"] == {"baseline": "eager", "sdpa": "sdpa"}[name.split("-")[1]]
        assert torch.equal(torch.tensor(got["logits"]), torch.tensor(logits[name])), name
        assert got["labels"] == {"0": "negative", "1": "positive"} and len(got["pipeline"]) == len(TEXTS)


WITHOUT = """
import json
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification
try:
    AutoModelForSequenceClassification.from_pretrained(FOLDER_, trust_remote_code=True)
    error = None
except ImportError as err:
    error = str(err)
plain = BertForSequenceClassification.from_pretrained(FOLDER_)
print(json.dumps({"error": error, "plain": type(plain).__name__, "attn": plain.config._attn_implementation}))
"""


@pytest.mark.slow  # a fresh python importing torch and transformers: 15-35 s here
def test_without_attnpaper_a_variant_names_pip_install_and_a_plain_load_warns(saved, tmp_path):
    root, _ = saved
    out = fresh(WITHOUT.replace("FOLDER_", repr(str(root / "bert-linear"))), tmp_path, attnpaper_installed=False)
    assert out["error"] and "pip install attnpaper" in out["error"] and "\n" not in out["error"], out["error"]
    # a plain class drops the attnpaper attention: transformers says, in one warning line, that the
    # checkpoint is of another type (attnpaper-bert), and reports the FAVOR+ features it leaves unused
    assert out["plain"] == "BertForSequenceClassification" and out["attn"] == "sdpa"
    warned = [line for line in out["stderr"].splitlines() if "model of type `attnpaper-bert`" in line]
    assert len(warned) == 1 and "to instantiate a model of type `bert`" in warned[0], out["stderr"][-2000:]
    assert "attnpaper.proj | UNEXPECTED" in out["stderr"]


def test_after_import_attnpaper_no_trust_remote_code_is_needed(saved):
    root, logits = saved
    tok = AutoTokenizer.from_pretrained(root / "bert-hybrid")
    back = AutoModelForSequenceClassification.from_pretrained(root / "bert-hybrid").eval()
    with torch.no_grad():
        assert torch.equal(
            back(**tok(TEXTS, padding=True, return_tensors="pt")).logits, torch.tensor(logits["bert-hybrid"])
        )


def test_labels_are_negative_and_positive():
    model = attnpaper.build_model(MODELS["bert"], "flash")
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    three = attnpaper.build_model(MODELS["bert"], "flash", num_labels=3)
    assert three.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}  # not IMDb: left as it was
    named = BertConfig(**{**MODELS["bert"].to_dict(), "id2label": {0: "bad", 1: "good"}})
    assert attnpaper.build_model(named, "baseline").config.id2label == {0: "bad", 1: "good"}


def test_a_trust_remote_code_load_does_not_register_auto_py_for_copying():
    AttnpaperBertConfig.register_for_auto_class()
    assert AttnpaperBertConfig._auto_class is None
    assert not attnpaper.build_model(MODELS["bert"], "linear").is_remote_code()
