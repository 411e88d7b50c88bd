"""``import attnpaper`` registers its model types with transformers' Auto classes in every process,
whatever sys.argv says, and without importing transformers itself (the command line stays instant)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

from attnpaper.model.auto import MODELS
from attnpaper.model.configs import CONFIGS, model_class_name

ROOT = Path(__file__).resolve().parent.parent
REGISTERED = """
import json, sys
sys.argv = ARGV_  # what `python -m attnpaper` (['-m']) or the console script (['attnpaper']) shows at import
import attnpaper
light = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers"})
from transformers import AutoConfig, AutoModelForSequenceClassification
config = AutoConfig.for_model("attnpaper-bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=8, attnpaper={"variant": "flash"})
model = AutoModelForSequenceClassification.from_config(config)
import inspect, transformers.models.auto.configuration_auto as ca  # a watched module keeps its source
print(json.dumps({"light": light, "config": type(config).__name__, "model": type(model).__name__,
                  "attn": model.config._attn_implementation, "source": "def for_model" in inspect.getsource(ca)}))
"""


def start(code: str) -> subprocess.Popen:
    """A fresh python running ``code`` on this checkout (stdout and stderr piped)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    pipe = subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=pipe, stderr=pipe, text=True, env=env, cwd=ROOT
    )


def test_both_types_are_registered_here():
    for kind, config in CONFIGS.items():
        assert AutoConfig.for_model(config.model_type).model_type == f"attnpaper-{kind}"
        assert MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[config] is MODELS[config]
        assert model_class_name(config) == MODELS[config].__name__  # the name a saved auto_map gives


def test_import_attnpaper_loads_neither_torch_nor_transformers():
    proc = start(
        "import sys, attnpaper; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))"
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "[]", err[-2000:]


@pytest.mark.slow  # three fresh pythons importing torch and transformers: 5-10 s here
def test_registered_whatever_sys_argv_says():
    argvs = (["-m"], ["attnpaper"], ["/usr/bin/attnpaper", "sweep"])
    procs = {str(argv): start(REGISTERED.replace("ARGV_", repr(argv))) for argv in argvs}  # all at once
    for argv, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (argv, err[-3000:])
        got = json.loads(out.strip().splitlines()[-1])
        assert got == {
            "light": [],
            "config": "AttnpaperBertConfig",
            "model": "AttnpaperBertForSequenceClassification",
            "attn": "attnpaper",
            "source": True,
        }, argv
