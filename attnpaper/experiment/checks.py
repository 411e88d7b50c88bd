"""Checks of a whole plan before any run starts: parameters, data, model and device.

A sweep of many runs should fail once, in one line and in seconds, not once per run after
loading a model: every check here raises ValueError naming the parameter or file and what is
valid. Each distinct data source and model is checked once per plan: what each run takes from the
data must hold both labels and, for training, a batch; a model folder must hold weights that load
(their headers only are read) and a real tokenizer, without which every word would be [UNK].
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import variants as V
from ..attention import has_flash_attn, has_torch_varlen
from ..attention.exact import BF16, FA2, device_phrase, has_bf16, has_fa2
from ..model.families import Family, family_of
from ..training import data as D

MIN_VOCAB = 1000
"""Fewer tokens than this is no real tokenizer (transformers builds a 5-token one for a folder without files)."""
PROBE = "The film was a wonderful story, and the actors played it well."
"""An English sentence that any usable English tokenizer splits into known tokens."""
FOLDER = "a folder as save_pretrained writes it (config.json, model.safetensors and the tokenizer's files)"


@dataclass(frozen=True)
class ResolvedData:
    """A plan's data source checked once: its labels per split, read with the checks (None for the hub,
    which datasets checks as it loads). The split checks read these labels rather than the files again."""

    source: str
    labels: dict | None


def resolve_data(source) -> ResolvedData:
    """Check ``source`` (a parquet folder, a token cache, 'synthetic' or 'hub') in one line if wrong, and keep
    its labels: the folder's files are read once, for their schema, rows, texts and labels together."""
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise ValueError(
            f"bad parameter data={source!r}: valid: 'hub', '{D.SYNTHETIC}', a directory of "
            "train/test.parquet, or a token cache .npz"
        )
    source = str(source)
    if source == "hub":
        check_hub_data()
        return ResolvedData(source, None)
    if source == D.SYNTHETIC or source.endswith(".npz"):
        return ResolvedData(source, D.split_labels(source))  # the cache's header is checked as it is read
    splits = D.read_parquet_splits(Path(source))  # each split, and the two against each other
    return ResolvedData(source, {s: labels for s, (_, labels) in splits.items()})


def check_data(source) -> None:
    """The data source exists, has the schema, is non-empty, has no null text and labels 0/1."""
    resolve_data(source)


@dataclass(frozen=True)
class ResolvedModel:
    """A plan's model resolved once: the name given, what resolve_model made of it (a folder, a hub name or a
    config), its transformers config and its family. The checks read it rather than resolving it again."""

    name: object
    source: object
    config: object
    family: Family


def resolve(model) -> ResolvedModel:
    """Resolve ``model`` (alias, directory, config or hub name) and read its config, without weights; ValueError
    in one line for a missing or unreadable one, or a family the variants do not plug into."""
    from ..model.build import MODEL_ALIASES, resolve_model

    if isinstance(model, (str, os.PathLike)) and Path(model).is_file():  # not "the directory does not exist"
        raise ValueError(
            f"bad parameter model={model!r}: {model} is a file, expected a directory holding config.json, "
            f"a hub name, or one of {', '.join(MODEL_ALIASES)}"
        )
    source = resolve_model(model)  # raises for a missing directory
    config = model_config(model, source)
    try:
        family = family_of(config)
    except ValueError as err:  # one line: the model's type and the supported families
        raise ValueError(f"bad parameter model={model!r}: {err}") from None
    return ResolvedModel(model, source, config, family)


def model_config(model, source):
    """The transformers config of ``model``, resolved to ``source`` (resolve_model), read without weights."""
    from transformers import AutoConfig, PretrainedConfig

    from ..model.build import MODEL_ALIASES

    if isinstance(source, PretrainedConfig):
        return source
    folder = local_folder(source)
    if folder is not None:
        if not (folder / "config.json").is_file():
            what = "is empty" if not any(folder.iterdir()) else "has no config.json"
            raise ValueError(
                f"bad parameter model={model!r}: the model folder {folder} {what}; valid: {FOLDER}, "
                f"a hub name, or one of {', '.join(MODEL_ALIASES)}"
            )
        try:
            return AutoConfig.from_pretrained(source)
        except Exception as err:  # broken JSON, an unknown model type, a bad value: each its own exception type
            raise ValueError(
                f"bad parameter model={model!r}: {folder / 'config.json'} is not a readable transformers "
                f"config ({first_line(err)}); valid: {FOLDER}"
            ) from None
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        where = (
            "not a local directory and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
            if offline
            else "not a local directory with config.json, nor a model on the hub"
        )
        raise ValueError(
            f"bad parameter model={model!r}: {where}; valid: a directory holding config.json, "
            f"a hub name, or one of {', '.join(MODEL_ALIASES)} "
            f"({first_line(err)})"
        ) from None


def check_hub_data() -> None:
    """IMDb from the Hub can be loaded: reachable, or in datasets' cache when offline (asked of its builder,
    which reads no data); else one line before any run, not a ConnectionError in every run's notebook."""
    try:
        from datasets import load_dataset_builder

        load_dataset_builder(D.HUB_NAME)
    except Exception as err:  # datasets raises ConnectionError, FileNotFoundError, ... by cause
        raise ValueError(
            f"bad parameter data='hub': {D.HUB_NAME} cannot be loaded ({first_line(err)}); valid: a directory "
            f"of train/test.parquet (--set data=DIR, or ${D.DATA_ENV}), '{D.SYNTHETIC}', or a token cache .npz"
        ) from None


def first_line(err) -> str:
    """An exception's first line, cut to 120 characters, for a one-line message."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:120]


def local_folder(source) -> Path | None:
    """The folder a resolved model source names, or None (a config or a hub name)."""
    return Path(source) if isinstance(source, (str, os.PathLike)) and Path(source).is_dir() else None


def check_weights(model, folder: Path) -> None:
    """The folder holds weights that load: safetensors files with a whole header, or a PyTorch zip archive.

    Only headers are read (safetensors checks its offsets against the file's size), so this is cheap.
    """
    from safetensors import safe_open

    def bad(why):
        raise ValueError(f"bad parameter model={model!r}: {why}; valid: {FOLDER}")

    tensors = sorted(folder.glob("*.safetensors"))
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not tensors and not bins:
        bad(f"the model folder {folder} has config.json but no weights (*.safetensors or pytorch_model.bin)")
    for path in tensors:
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as err:
            bad(f"{path} is not a valid safetensors file ({first_line(err)})")
    for path in bins:
        with open(path, "rb") as f:
            head = f.read(2)
        if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # torch.save's zip archive, or a legacy pickle
            bad(f"{path} is not a PyTorch weights file")


def check_tokenizer(model: ResolvedModel, where) -> None:
    """The tokenizer a run of ``model`` loads is a real one: it loads, its vocabulary fits the model's, and
    it knows the words of an English sentence (a folder without tokenizer files gives a 5-token one)."""
    from ..training.loop import load_tokenizer

    valid = f"valid: {FOLDER}"
    conf, source, model = model.config, model.source, model.name
    try:
        tok = load_tokenizer(source)  # what resolve made of the name, not the name again
    except Exception as err:
        raise ValueError(
            f"bad parameter model={model!r}: the tokenizer in {where} does not load ({first_line(err)}); {valid}"
        ) from None
    size, model_size = len(tok), getattr(conf, "vocab_size", None)
    ids = tok(PROBE, add_special_tokens=False)["input_ids"]
    why = None
    if size < MIN_VOCAB or (model_size and size < model_size // 2):
        why = f"a vocabulary of {size} tokens for a model of {model_size} (missing tokenizer files?)"
    elif model_size and size > model_size:
        why = f"a vocabulary of {size} tokens, more than the model's {model_size} embeddings"
    elif not ids or all(i == tok.unk_token_id for i in ids):
        why = f"every word of {PROBE!r} is unknown to it ({tok.unk_token})"
    if why:
        raise ValueError(f"bad parameter model={model!r}: the tokenizer in {where} is not usable: {why}; {valid}")


def check_model(model: ResolvedModel) -> None:
    """A local model folder has loadable weights and a real tokenizer; a config or alias, a real tokenizer.

    Hub names are left to transformers (offline, only its cache can answer).
    """
    from transformers import PretrainedConfig

    from ..training.loop import TOKENIZER_ENV

    folder = local_folder(model.source)
    if folder is not None:
        check_weights(model.name, folder)
        check_tokenizer(model, folder)
    elif isinstance(model.source, PretrainedConfig):  # random weights; the tokenizer of $ATTNPAPER_TOKENIZER or MiniLM
        check_tokenizer(model, os.environ.get(TOKENIZER_ENV) or "the offline MiniLM folder")


def check_device(cfg, device) -> None:
    """Options that this device (or this install) cannot run, refused before the run."""
    device = torch.device(device)
    if "flash_backend" in V.TABLE[cfg.variant].options:
        if cfg.flash_backend == "flash_attn" and not has_flash_attn():
            raise ValueError(
                "bad parameter flash_backend='flash_attn': the flash-attn package is not installed "
                "(pip install 'attnpaper[flash]'); valid here: auto, varlen, sdpa, math"
            )
        if cfg.flash_backend in ("varlen", "flash_attn") and device.type != "cuda":
            raise ValueError(
                f"bad parameter flash_backend={cfg.flash_backend!r}: needs a CUDA GPU, "
                f"this run is on {device.type}; valid here: auto, sdpa, math"
            )
        if cfg.flash_backend == "varlen" and not has_torch_varlen():
            raise ValueError(
                f"bad parameter flash_backend='varlen': torch {torch.__version__} has no "
                "torch.nn.attention.varlen; valid here: auto, flash_attn, sdpa, math"
            )
        if cfg.flash_backend in ("varlen", "flash_attn") and device.type == "cuda" and not has_fa2(device):
            raise ValueError(
                f"bad parameter flash_backend={cfg.flash_backend!r}: FlashAttention-2 needs compute capability "
                f">= {FA2[0]}.{FA2[1]}, this run is on {device_phrase(device)}; valid here: auto, sdpa, math"
            )
    if cfg.precision == "bf16" and device.type == "cuda" and not has_bf16(device):
        raise ValueError(
            f"bad parameter precision='bf16': {device_phrase(device)} has no native bf16 (it needs "
            f"{BF16[0]}.{BF16[1]}); valid here: fp16, fp32, auto (fp16 with a gradient scaler here)"
        )


MIN_STEPS = 2
"""The fewest training steps a run may take: the table (analysis.results.record_problem) refuses an ok record
of fewer, so such a run would be recorded ok, left out of the table, and skipped by every rerun."""


def check_steps(cfg, train_rows) -> None:
    """The run trains at least MIN_STEPS steps (``train_rows``: the rows it trains on; None where unknown)."""
    per_epoch = math.ceil(train_rows / cfg.batch_size) if train_rows else None
    total = min(math.ceil(cfg.epochs * per_epoch) if per_epoch else math.inf, cfg.max_steps or math.inf)
    if total >= MIN_STEPS:
        return
    why = f"the run would train {total} step(s), and the table takes no run of fewer than {MIN_STEPS}"
    if cfg.max_steps is not None and cfg.max_steps < MIN_STEPS:
        raise ValueError(f"bad parameter max_steps={cfg.max_steps!r}: {why}; valid: None or an int >= {MIN_STEPS}")
    raise ValueError(
        f"bad parameter epochs={cfg.epochs!r}: with {train_rows} training rows at batch_size={cfg.batch_size} "
        f"{why}; valid: more epochs or train_samples, or a smaller batch_size"
    )


@dataclass(frozen=True)
class Plan:
    """A plan's data sources and models, each resolved once (by source, by model name); the checks read it."""

    data: dict
    models: dict


def resolve_plan(configs) -> Plan:
    """Each distinct data source and model of ``configs`` resolved (and checked as it is read) once."""
    data = {source: resolve_data(source) for source in sorted({c.data for c in configs}, key=str)}
    models = {}
    for cfg in configs:
        if cfg.model not in models:
            models[cfg.model] = resolve(cfg.model)
    return Plan(data, models)


def check_plan(configs, device=None) -> list:
    """Validate every configuration against its data, model and the device; return them.

    Raises ValueError for the first problem found, before anything has run: the parameters first, then
    the plan resolved once (``resolve_plan``), then what each run takes from it.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for cfg in configs:
        cfg.validate()
    plan = resolve_plan(configs)
    for cfg in configs:  # what each run takes from each split: both labels, and a batch to train on
        labels = plan.data[cfg.data].labels
        for split, limit in (("train", cfg.train_samples), ("test", cfg.test_samples)):
            if labels is not None:
                D.check_split(cfg.data, split, labels[split], limit, cfg.batch_size if split == "train" else None)
        train = labels and len(labels["train"])
        check_steps(cfg, min(filter(None, (train, cfg.train_samples)), default=None))
    for model in plan.models.values():  # each model checked once
        check_model(model)
    for cfg in configs:
        m = plan.models[cfg.model]
        cfg.validate(m.family.max_length(m.config), m.config.num_hidden_layers)
        check_device(cfg, device)
    return list(configs)
