"""Checks of a whole plan before any run starts: parameters, data, model and device.

A sweep of many runs should fail once, in one line and in seconds, not once per run after
loading a model: every check here raises ValueError naming the parameter or file and what is
valid. Each distinct data source and model is checked once per plan.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..training import data as D
from ..attention import has_flash_attn, has_torch_varlen

SUPPORTED_MODEL_TYPES = ("bert", "distilbert")
"""Encoders the attnpaper variants plug into (MiniLM is a BERT)."""


def check_data(source) -> None:
    """The data source exists, has the schema, is non-empty, has no null text and labels 0/1."""
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise ValueError(f"bad parameter data={source!r}: valid: 'hub', '{D.SYNTHETIC}', a directory of "
                         "train/test.parquet, or a token cache .npz")
    source = str(source)
    if source in ("hub", D.SYNTHETIC):
        return  # the hub is checked by datasets when it loads (offline, only its cache can answer)
    if source.endswith(".npz"):
        D.load_token_cache_meta(source)
        return
    for split in D.SPLITS:
        D._read_parquet(Path(source), split)


def model_config(model):
    """The transformers config of ``model`` (alias, directory, config or hub name), read without weights."""
    from transformers import AutoConfig, PretrainedConfig

    from ..model.build import MODEL_ALIASES, resolve_model

    source = resolve_model(model)  # raises for a missing directory
    if isinstance(source, PretrainedConfig):
        return source
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        where = ("not a local directory and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
                 if offline else "not a local directory with config.json, nor a model on the hub")
        raise ValueError(f"bad parameter model={model!r}: {where}; valid: a directory holding config.json, "
                         f"a hub name, or one of {', '.join(MODEL_ALIASES)} "
                         f"({str(err).strip().splitlines()[0][:120]})") from None


def check_device(cfg, device) -> None:
    """Options that this device (or this install) cannot run, refused before the run."""
    device = torch.device(device)
    if cfg.variant in ("flash", "hybrid"):
        if cfg.flash_backend == "flash_attn" and not has_flash_attn():
            raise ValueError("bad parameter flash_backend='flash_attn': the flash-attn package is not installed "
                             "(pip install 'attnpaper[flash]'); valid here: auto, varlen, sdpa, math")
        if cfg.flash_backend in ("varlen", "flash_attn") and device.type != "cuda":
            raise ValueError(f"bad parameter flash_backend={cfg.flash_backend!r}: needs a CUDA GPU, "
                             f"this run is on {device.type}; valid here: auto, sdpa, math")
        if cfg.flash_backend == "varlen" and not has_torch_varlen():
            raise ValueError(f"bad parameter flash_backend='varlen': torch {torch.__version__} has no "
                             "torch.nn.attention.varlen; valid here: auto, flash_attn, sdpa, math")
    if cfg.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("bad parameter precision='bf16': this GPU has no bf16; valid here: fp16, fp32, auto")


def check_plan(configs, device=None) -> list:
    """Validate every configuration against its data, model and the device; return them.

    Raises ValueError for the first problem found, before anything has run.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for cfg in configs:
        cfg.validate()
    for source in sorted({c.data for c in configs}):
        check_data(source)
    models = {}
    for cfg in configs:
        if cfg.model not in models:
            models[cfg.model] = model_config(cfg.model)
        conf = models[cfg.model]
        if conf.model_type.removeprefix("attnpaper-") not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"bad parameter model={cfg.model!r}: a {conf.model_type} model; the attnpaper "
                             f"variants support {', '.join(SUPPORTED_MODEL_TYPES)} encoders")
        cfg.validate(getattr(conf, "max_position_embeddings", None), getattr(conf, "num_hidden_layers", None))
        check_device(cfg, device)
    return list(configs)
