"""The Trainer reference row (issue 39): what a reader gets without this book, on the same data.

transformers' ``Trainer`` and ``AutoModelForSequenceClassification`` with no attnpaper model code: sdpa
attention, dynamic padding (``DataCollatorWithPadding``), eager steps, bf16 autocast on a GPU (fp32 on a
CPU), and the paper's hyperparameters read from RunConfig's defaults, so that they follow the runs'.
The token ids are attnpaper's own (``load_splits``). One record per seed, timed on the runs' ``Clock``.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from ..experiment.fingerprint import fingerprints
from ..experiment.records import git_sha, read_record, save_result
from ..model.build import resolve_model
from ..training import data as D
from ..training import exclusive
from ..training.clock import Clock
from ..training.config import RunConfig, hash_config, tokenizer_override
from ..training.loop import load_tokenizer, precision_of
from ..training.measure import MB, device_info, sync

TRAINER = "trainer"
"""The records' variant: a name none of attnpaper's variants has, so they never pool with the runs."""
SETTINGS = (
    "model",
    "data",
    "max_length",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "schedule",
    "warmup_ratio",
    "max_grad_norm",
    "train_samples",
    "test_samples",
    "eval_batch_size",
)
"""The RunConfig fields a reference run reads; the rest (variant options, step modes) do not apply to it."""


def reference_config(model, data, seed, max_length=128, train_samples=None, test_samples=None) -> RunConfig:
    """The runs' configuration at the paper's defaults for these inputs: attnpaper's checks (check_plan) take
    it, and the Trainer reads its hyperparameters from it."""
    return RunConfig(
        variant="baseline",
        seed=seed,
        model=model,
        data=str(data),
        max_length=max_length,
        train_samples=train_samples,
        test_samples=test_samples,
    )


def settings(cfg: RunConfig) -> dict:
    """What defines a reference run apart from its seed, as its record keeps it and its hash covers it."""
    out = {k: getattr(cfg, k) for k in SETTINGS}
    out |= {"runner": "transformers.Trainer", "attn_implementation": "sdpa", "padding": "dynamic"}
    tokenizer = tokenizer_override(cfg.model)
    return out | ({"tokenizer": tokenizer} if tokenizer else {})


def record_path(out_dir, cfg: RunConfig) -> Path:
    return Path(out_dir) / f"{TRAINER}_seed{cfg.seed}_{hash_config(settings(cfg))}.json"


def recorded(path) -> bool:
    """True when ``path`` holds a whole record of status ok (a damaged or failed one is run again)."""
    try:
        return read_record(path)["status"] == "ok"
    except (ValueError, OSError):
        return False


class Reviews(torch.utils.data.Dataset):
    """A Split as the dicts a Trainer's collator pads: ids, their mask and the label, unpadded."""

    def __init__(self, split: D.Split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        ids = list(self.split.ids[i])
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(self.split.labels[i])}


def load_model(model):
    """transformers' classifier for ``model`` (an alias, directory or hub name) with sdpa attention, in fp32
    (a bundle's fp16 weights too: bf16 is autocast's, as in the runs); a random-init config from_config."""
    from transformers import AutoModelForSequenceClassification

    source = resolve_model(model)
    if isinstance(source, str):
        return AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=2, attn_implementation="sdpa", dtype=torch.float32
        )
    config = source.__class__.from_dict(source.to_dict() | {"num_labels": 2})
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")


def arguments(cfg: RunConfig, out_dir, precision: str, device):
    """TrainingArguments with the runs' hyperparameters; no checkpoints, logs, reports or compile."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.schedule,  # linear decay to 0 or constant: the same names as RunConfig's
        warmup_steps=float(cfg.warmup_ratio),  # a float below 1 is a ratio of the steps
        max_grad_norm=cfg.max_grad_norm or 0.0,  # None (the runs' default): no clipping, which Trainer spells 0
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=cfg.seed,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,  # Trainer's default: collating 32 lists of ids is no bottleneck
        dataloader_pin_memory=device.type == "cuda",
        remove_unused_columns=False,
        torch_compile=False,
        use_cpu=device.type != "cuda",
    )


def prepare(cfg: RunConfig, clock: Clock) -> tuple:
    """(model, tokenizer, splits): tokenizer and weights charged to "model", the token ids to "data"."""
    from transformers import set_seed

    with clock.part("model"):
        tokenizer = load_tokenizer(cfg.model)
        set_seed(cfg.seed)  # the classifier head's initial weights follow the seed, as the runs' do
        model = load_model(cfg.model)
    with clock.part("data"):
        splits = D.load_splits(cfg.data, tokenizer, cfg.max_length, cfg.train_samples, cfg.test_samples)
    return model, tokenizer, splits


def train_reference(cfg: RunConfig, clock: Clock) -> dict:
    """Train and score one seed with Trainer; the measurements of its record."""
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = precision_of(cfg, device)
    model, tokenizer, splits = prepare(cfg, clock)
    with tempfile.TemporaryDirectory(prefix="attnpaper-trainer-") as tmp, clock.part("model"):
        trainer = Trainer(
            model=model,
            args=arguments(cfg, tmp, precision, device),
            train_dataset=Reviews(splits["train"]),
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        trainer.remove_callback(PrinterCallback)  # its end-of-training dict; run_seed prints one line per seed
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with clock.part("steps"):
        t0 = time.perf_counter()
        result = trainer.train()
        sync(device)
        train_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / MB if device.type == "cuda" else None
    reserved = torch.cuda.max_memory_reserved() / MB if device.type == "cuda" else None
    with clock.part("evaluation"):
        pred = trainer.predict(Reviews(splits["test"]))
    correct = np.argmax(pred.predictions, axis=-1) == pred.label_ids
    tokens = splits["train"].real_tokens() * cfg.epochs
    return {
        "accuracy": float(correct.mean()),
        "train_time_s": train_s,
        "trainer_train_runtime_s": result.metrics.get("train_runtime"),
        "peak_memory_mb": peak,
        "peak_reserved_mb": reserved,
        "tokens_per_s": tokens / train_s,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "test_loss": pred.metrics.get("test_loss"),
        "precision": precision,
        "train_samples_used": len(splits["train"]),
        "test_samples_used": len(splits["test"]),
        "model_class": type(model).__name__,
        "attn_implementation_used": model.config._attn_implementation,
        "optimizer": trainer.args.optim.value if hasattr(trainer.args.optim, "value") else str(trainer.args.optim),
    }


def new_reference_record(cfg: RunConfig, first_in_process: bool) -> dict:
    """A record before any measurement: the settings, hash, device, versions, git sha and fingerprints,
    with the fields attnpaper's records have (``read_record`` reads it; kernels and step_mode do not apply)."""
    versions = device_info()
    return {
        **settings(cfg),
        "variant": TRAINER,
        "seed": cfg.seed,
        "config": settings(cfg),
        "config_hash": hash_config(settings(cfg)),
        "precision": None,
        "accuracy": None,
        "train_time_s": None,
        "peak_memory_mb": None,
        "tokens_per_s": None,
        "kernels": None,
        "step_mode": "eager",
        "device": versions.pop("device"),
        "versions": versions,
        "git_sha": git_sha(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "first_in_process": first_in_process,  # False: imports were paid by an earlier seed ("start" is 0)
        "status": "running",
        "error": None,
        **fingerprints(cfg),
    }


def run_seed(cfg: RunConfig, out_dir, force=False, first_in_process=True, clock=None, log=print) -> dict | None:
    """One seed, start to record; None when an ok record exists and not ``force``. A failure is recorded
    (never over an ok record: save_result) and re-raised. ``clock``: one started earlier in this process
    (the command's, before its checks); else the process's launch for the first seed, now for a later one."""
    clock = clock or (Clock() if first_in_process else Clock(launched=time.time()))
    path = record_path(out_dir, cfg)
    if recorded(path) and not force:
        log(f"skip seed {cfg.seed}: {path} holds an ok record (--force runs it again)")
        return None
    rec = new_reference_record(cfg, first_in_process)
    try:
        with exclusive.hold(None, clock):  # the device to this run alone, as the runs hold it
            rec.update(train_reference(cfg, clock), status="ok")
    except Exception as err:
        rec.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        rec.update(clock.stop())
        save_result(rec, path)
        raise
    rec.update(clock.stop())
    save_result(rec, path)
    peak = "n/a on a CPU" if rec["peak_memory_mb"] is None else f"{rec['peak_memory_mb']:.0f} MiB"
    log(
        f"seed {cfg.seed}: accuracy {rec['accuracy']:.4f}, train {rec['train_time_s']:.1f} s, "
        f"end to end {rec['end_to_end_s']:.1f} s, peak {peak} -> {path}"
    )
    return rec
