"""A self-contained folder for an offline GPU machine: fp16 weights, IMDb token ids, wheels, git sha.

Readers on air-gapped clusters run `python -m attnpaper bundle` where the hub (or a local copy)
is reachable, copy the folder and `scripts/gpu_run.sh` across, and run there. With internet the
bundle is unnecessary: the notebook loads `distilbert-base-uncased` and `stanfordnlp/imdb` itself.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from . import data as D
from .records import git_sha

LIMIT_MB = 64
MODEL_DIRNAME = "all-MiniLM-L6-v2-fp16"
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def export_fp16(src: Path, dst: Path) -> Path:
    """Save a BERT checkpoint's weights as fp16 safetensors (half the bytes; ~4.5e-4 relative rounding)."""
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    weights = load_file(src / "model.safetensors")
    save_file({k: v.half().contiguous() if v.is_floating_point() else v for k, v in weights.items()},
              dst / "model.safetensors", metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    return dst


def unxz(path) -> Path:
    """Decompress ``name.npz.xz`` (written with ``xz=True``) beside it as ``name.npz``; returns that path."""
    import lzma

    path = Path(path)
    if path.suffix != ".xz":
        raise ValueError(f"{path} is not an .xz file")
    out = path.with_suffix("")
    with lzma.open(path) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def _xz_cache(npz: Path) -> Path:
    """Rewrite a compressed .npz as an uncompressed one inside xz (512-token ids: 12 MiB instead of 17)."""
    import io
    import lzma

    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out = npz.with_name(npz.name + ".xz")
    out.write_bytes(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    npz.unlink()
    return out


def make_bundle(out="bundle", source=None, max_length=128, wheels=".whl", xz=False) -> Path:
    """Write the bundle and check that what one call carries (the model, these token ids, the lengths,
    the git sha and the wheels) stays under the device's 64 MiB. xz: store the ids as .npz.xz
    (``unxz`` restores the .npz; scripts/gpu_run.sh does it)."""
    from transformers import AutoTokenizer

    from .models import offline_model_dir

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = source or D.default_source()
    model_dir = export_fp16(offline_model_dir(), out / MODEL_DIRNAME)
    tok = AutoTokenizer.from_pretrained(model_dir)
    raw = D.read_texts(source)
    splits = {s: D.tokenize(*raw[s], tok, max_length) for s in D.SPLITS}
    ids = out / f"imdb-{max_length}.npz"
    D.save_token_cache(ids, splits, tok, max_length)
    if xz:
        ids = _xz_cache(ids)
    full = tok(raw["train"][0], truncation=False)["input_ids"]
    np.save(out / "imdb-train-lengths.npy", np.array([len(x) for x in full], dtype=np.int32))
    (out / "GIT_SHA").write_text(git_sha() + "\n")
    carried = [*model_dir.rglob("*"), ids, out / "imdb-train-lengths.npy", out / "GIT_SHA"]
    size = sum(p.stat().st_size for p in carried if p.is_file())
    wheel_size = sum(p.stat().st_size for p in Path(wheels).glob("*.whl")) if Path(wheels).is_dir() else 0
    print(f"bundle {out}: model, {ids.name} and lengths {size / 2**20:.1f} MiB + wheels {wheel_size / 2**20:.1f} MiB")
    if size + wheel_size > LIMIT_MB * 2**20:
        raise ValueError(f"bundle and wheels are {(size + wheel_size) / 2**20:.1f} MiB, over {LIMIT_MB} MiB"
                         + ("" if xz else "; store the ids with xz (make_bundle(..., xz=True))"))
    return out
