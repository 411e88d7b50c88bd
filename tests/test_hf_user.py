"""A Hugging Face user's cases (issue 37): the base model and the usual heads of a variant's checkpoint, its
tokenizer, and the checkpoints that must be refused at load rather than run the wrong attention."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, DistilBertConfig

import attnpaper
from attnpaper.model.auto import CLASSES
from attnpaper.model.configs import CONFIGS
from attnpaper.model.families import HEADS

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {
    "bert": "bert-tiny-random",
    "distilbert": DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64),
    "roberta": "roberta-tiny-random",
}
IDS = torch.tensor([[101, 1996, 2143, 2001, 2307, 102], [101, 2025, 2204, 1012, 102, 0]])


def saved(tmp_path, family="bert", variant="hybrid") -> tuple:
    """A built model (eval) and the folder it was saved to."""
    model = attnpaper.build_model(FAMILIES[family], variant, num_features=16, seed=4).eval()
    model.save_pretrained(tmp_path / family)
    return model, tmp_path / family


def linear_kernels(model) -> list[list[str]]:
    """kernels_used after one forward, with the kernel names cut to their first word (sdpa, linear)."""
    with torch.no_grad():
        model(input_ids=IDS[:, None] if "MultipleChoice" in type(model).__name__ else IDS)
    return [[k.split()[0] for k in layer] for layer in attnpaper.kernels_used(model)]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_head_loads_a_variant_checkpoint_with_its_attention(family, tmp_path):
    model, folder = saved(tmp_path, family)
    for auto in HEADS:
        back = getattr(transformers, auto).from_pretrained(folder, ignore_mismatched_sizes=True).eval()
        assert type(back) is CLASSES[CONFIGS[family], auto], auto
        assert linear_kernels(back) == [["sdpa"], ["linear"]], auto  # hybrid: one exact layer, one linear
    base = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():  # the same encoder, with the saved FAVOR+ features: the same embeddings
        assert torch.equal(base(input_ids=IDS).last_hidden_state, model.base_model(input_ids=IDS).last_hidden_state)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", *HEADS}
    assert auto_map["AutoModel"] == f"attnpaper_model.{CLASSES[CONFIGS[family], 'AutoModel'].__name__}"


def edited(folder: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``folder`` whose config.json went through ``edit`` (a function of the dict)."""
    copy = tmp_path / f"edited-{folder.name}"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    edit(config)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def refused(folder: Path) -> str:
    """The one-line ValueError that loading ``folder`` raises (with attnpaper and through trust_remote_code)."""
    messages = set()
    for kwargs in ({}, {"trust_remote_code": True}):
        with pytest.raises(ValueError) as err:
            AutoModelForSequenceClassification.from_pretrained(folder, **kwargs)
        messages.add(str(err.value))
    assert len(messages) == 1 and "\n" not in next(iter(messages)), messages
    return messages.pop()


def test_a_config_without_its_attnpaper_settings_is_refused(tmp_path):
    _, folder = saved(tmp_path, variant="linear")
    said = refused(edited(folder, tmp_path, lambda c: c.pop("attnpaper")))
    assert "attnpaper-bert config has no 'attnpaper' settings" in said and "'bert'" in said


def test_fewer_layer_kinds_than_layers_is_refused_at_load(tmp_path):
    _, folder = saved(tmp_path, variant="linear")
    said = refused(edited(folder, tmp_path, lambda c: c["attnpaper"].update(layers=["linear"])))
    assert "1 layer kinds for a model of 2 layers" in said, said
    said = refused(edited(folder, tmp_path / "v", lambda c: c["attnpaper"].update(variant="fast")))
    assert "attnpaper.variant" in said and "'fast'" in said and "valid: baseline" in said, said


def test_fewer_layer_kinds_than_layers_is_refused_when_built_from_a_config():
    sizes = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 8}
    config = transformers.AutoConfig.for_model("attnpaper-bert", **sizes)
    config.attnpaper = {"variant": "linear", "layers": ["linear"] * 2, "seed": 0, "options": {}}
    with pytest.raises(ValueError, match="2 layer kinds for a model of 3 layers"):
        AutoModel.from_config(config)
    named = transformers.AutoConfig.for_model("attnpaper-bert", **sizes, attnpaper={"variant": "hybrid"})
    assert named.attnpaper["layers"] == ["exact", "linear", "linear"]  # only a variant: its plan, as build_model's
    assert linear_kernels(AutoModel.from_config(named).eval()) == [["sdpa"], ["linear"], ["linear"]]


@pytest.mark.parametrize("asked", ["eager", "sdpa"])
def test_another_attn_implementation_is_refused_and_the_way_to_it_named(asked, tmp_path):
    model, folder = saved(tmp_path, variant="linear")
    with pytest.raises(ValueError) as err:
        AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation=asked)
    said = str(err.value)
    assert f"attn_implementation={asked!r}" in said and "build_model(path, 'baseline')" in said and "\n" not in said
    same = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="attnpaper").eval()
    assert linear_kernels(same) == [["linear"], ["linear"]]
    softmax = attnpaper.build_model(folder, "baseline")  # the way the message names: the same weights, eager
    assert softmax.config._attn_implementation == "eager"
    name = "bert.encoder.layer.1.attention.self.query.weight"
    assert torch.equal(dict(softmax.named_parameters())[name], dict(model.named_parameters())[name])


def test_after_import_attnpaper_the_tokenizer_loads_without_a_prompt(tmp_path, monkeypatch):
    _, folder = saved(tmp_path, "roberta", "linear")
    AutoTokenizer.from_pretrained(attnpaper.offline_model_dir()).save_pretrained(folder)
    monkeypatch.setattr("builtins.input", lambda *args: pytest.fail(f"transformers asked: {args}"))
    assert type(AutoTokenizer.from_pretrained(folder)).__name__ == "BertTokenizer"  # the one saved beside it


def fresh(code: str, cwd: Path) -> dict:
    """Run ``code`` in a new python that does not import attnpaper itself, stdin closed (a prompt reads EOF)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_MODULES_CACHE": str(cwd / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"said": proc.stdout + proc.stderr}


REMOTE = """
import json, sys, torch, transformers
folders, heads = FOLDERS_, HEADS_
plain = transformers.AutoTokenizer.from_pretrained(folders["bert"])  # transformers asks; closed stdin says no
out = {"before": "attnpaper" in sys.modules, "plain": type(plain).__name__}
for name, folder in folders.items():
    tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    ids = tok(["a fine film"], return_tensors="pt")["input_ids"]
    for auto in heads:
        model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True,
                                                            ignore_mismatched_sizes=True).eval()
        with torch.no_grad():
            model(input_ids=ids[:, None] if "MultipleChoice" in auto else ids)
        import attnpaper
        out[f"{name} {auto}"] = [type(model).__name__, attnpaper.kernels_used(model)[-1][0].split()[0]]
    out[name] = type(tok).__name__
print(); print(json.dumps(out))  # on a line of its own: the prompt ends without a newline
"""


@pytest.mark.slow  # a fresh python importing torch and transformers: 15-35 s here
def test_trust_remote_code_loads_every_head_and_the_tokenizer_in_a_fresh_process(tmp_path):
    folders = {}
    tok = AutoTokenizer.from_pretrained(attnpaper.offline_model_dir())
    for family in ("bert", "roberta"):
        folders[family] = str(saved(tmp_path, family, "linear")[1])
        tok.save_pretrained(folders[family])
    out = fresh(REMOTE.replace("FOLDERS_", repr(folders)).replace("HEADS_", repr(list(HEADS))), tmp_path)
    # without trust_remote_code transformers 5 asks whether to run attnpaper_model.py (it reads config.json's
    # auto_map before tokenizer_config.json); answered no, the plain tokenizer still loads, attnpaper unimported.
    # With trust_remote_code, every later load asks nothing.
    assert out["before"] is False and out["plain"] == "BertTokenizer"
    assert out["said"].count("[y/N]") == 1, out["said"][-3000:]
    for family in folders:
        assert out[family] == "BertTokenizer"  # the tokenizer saved beside the model, whatever the family
        for auto in HEADS:
            assert out[f"{family} {auto}"] == [CLASSES[CONFIGS[family], auto].__name__, "linear"], auto
