"""A self-contained folder for an offline GPU machine: fp16 weights, IMDb token ids, wheels, git sha.

Readers on air-gapped clusters run `python -m attnpaper bundle` where the hub (or a local copy)
is reachable, copy the folder and `scripts/gpu_run.sh` across, and run there. With internet the
bundle is unnecessary: the notebook loads `distilbert-base-uncased` and `stanfordnlp/imdb` itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..training import data as D
from .records import GIT_SHA_ENV, git_sha

LIMIT_MB = 64
MODEL_DIRNAME = "all-MiniLM-L6-v2-fp16"
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def export_fp16(src: Path, dst: Path) -> Path:
    """Save a BERT checkpoint's weights as fp16 safetensors (half the bytes; ~4.5e-4 relative rounding)."""
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    weights = load_file(src / "model.safetensors")
    save_file(
        {k: v.half().contiguous() if v.is_floating_point() else v for k, v in weights.items()},
        dst / "model.safetensors",
        metadata={"format": "pt"},
    )
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    return dst


XZ_DIRNAME = "xz"
"""bundle/xz/ mirrors the bundle with its two large files xz-compressed: what a call carries when the
512-token ids and the model must fit in 64 MiB together (scripts/gpu_run.sh unpacks it)."""


def _xz(src: Path, dst: Path, preset=6) -> Path:
    """Write ``dst`` (.xz) from ``src``; an .npz is stored uncompressed inside (xz packs it tighter)."""
    import io
    import lzma

    data = src.read_bytes()
    if src.suffix == ".npz":
        with np.load(src) as z:
            buf = io.BytesIO()
            np.savez(buf, **{k: z[k] for k in z.files})
            data = buf.getvalue()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(lzma.compress(data, preset=preset))
    return dst


def unpack_xz(src="bundle/xz", dst="bundle") -> list[Path]:
    """Restore every file of ``src`` under ``dst`` (``*.xz`` decompressed, the rest copied); returns them."""
    import lzma

    src, dst, out = Path(src), Path(dst), []
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder; make it with make_bundle(..., xz=True)")
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dst / f.relative_to(src)
        target = target.with_suffix("") if f.suffix == ".xz" else target
        target.parent.mkdir(parents=True, exist_ok=True)
        with lzma.open(f) if f.suffix == ".xz" else open(f, "rb") as a, open(target, "wb") as b:
            shutil.copyfileobj(a, b)
        out.append(target)
    return out


WHEELS = ".whl"
"""The default wheels folder; it may be absent (no wheels to carry). A folder given otherwise must exist."""
MIN_LENGTH = 8
"""The shortest max_length a run takes (training.config.RunConfig): shorter token ids could not be used."""


def check_wheels(wheels) -> Path:
    """``wheels`` a folder (the default may be absent): a file or a missing folder is refused in one line,
    rather than counted as no wheels."""
    path = Path(wheels)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--wheels {wheels} is a file; give the folder holding the wheels (*.whl) to carry")
    if not path.exists() and str(wheels) != WHEELS:
        raise ValueError(f"--wheels {wheels}: no such folder; give the folder holding the wheels (*.whl) to carry")
    return path


def check_bundle_args(out, max_length, positions=512, wheels=WHEELS) -> Path:
    """``out`` a folder that can be written, ``max_length`` an int in MIN_LENGTH..positions, ``wheels`` a
    folder: ValueError in one line."""
    import os

    if isinstance(max_length, bool) or not isinstance(max_length, int) or not MIN_LENGTH <= max_length <= positions:
        raise ValueError(
            f"--max-length {max_length!r}: give an int from {MIN_LENGTH} to {positions} (runs take at least "
            f"{MIN_LENGTH} tokens; the model has {positions} positions)"
        )
    check_wheels(wheels)
    if out is None or not str(out).strip():
        raise ValueError("--out is empty; give a folder for the bundle, e.g. bundle")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the bundle")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        why = (
            "a folder on its path is a file" if isinstance(err, (FileExistsError, NotADirectoryError)) else err.strerror
        )
        raise ValueError(f"cannot write --out {out}: {why or err}; give a writable folder") from None
    return out


def make_bundle(out="bundle", source=None, max_length=128, wheels=WHEELS, xz=False) -> Path:
    """Write the bundle and check that what one call carries (the model, these token ids, the lengths,
    the git sha and the wheels) stays under the device's 64 MiB. xz: also write bundle/xz/ (model
    weights and token ids xz-compressed) and check that instead. A bad ``out`` or ``max_length`` is
    refused (ValueError, one line) before anything is read or written, and so is a copy of the checkout
    whose git sha is unknown (records.git_sha: never that of a repository around the copy)."""
    import json

    from transformers import AutoTokenizer

    from ..model.build import offline_model_dir

    sha = git_sha()
    if sha == "unknown":  # a copy without .git: the sha of a repository around it would be another project's
        raise ValueError(
            f"no git sha to record: {Path(__file__).resolve().parents[2]} is not the top of a git checkout of "
            f"attnpaper; run bundle in one, or set {GIT_SHA_ENV} to the commit this copy is of"
        )
    src = offline_model_dir()
    positions = json.loads((src / "config.json").read_text()).get("max_position_embeddings", 512)
    out = check_bundle_args(out, max_length, positions, wheels)
    source = source or D.default_source()
    model_dir = export_fp16(src, out / MODEL_DIRNAME)
    tok = AutoTokenizer.from_pretrained(model_dir)
    raw = D.read_texts(source)
    splits = {s: D.tokenize(*raw[s], tok, max_length) for s in D.SPLITS}
    ids = out / f"imdb-{max_length}.npz"
    D.save_token_cache(ids, splits, tok, max_length)
    full = tok(raw["train"][0], truncation=False)["input_ids"]
    np.save(out / "imdb-train-lengths.npy", np.array([len(x) for x in full], dtype=np.int32))
    (out / "GIT_SHA").write_text(sha + "\n")
    carried = [*model_dir.rglob("*"), ids, out / "imdb-train-lengths.npy", out / "GIT_SHA"]
    if xz:
        packed = out / XZ_DIRNAME
        shutil.rmtree(packed, ignore_errors=True)
        big = {model_dir / "model.safetensors", ids}
        for f in big | {p for p in model_dir.iterdir() if p.is_file()}:
            rel = f.relative_to(out)
            if f in big:
                _xz(f, packed / rel.with_name(rel.name + ".xz"))
            else:
                (packed / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, packed / rel)
        carried = [*packed.rglob("*"), out / "GIT_SHA"]
    size = sum(p.stat().st_size for p in carried if p.is_file())
    wheel_size = sum(p.stat().st_size for p in Path(wheels).glob("*.whl")) if Path(wheels).is_dir() else 0
    what = f"{out / XZ_DIRNAME} and GIT_SHA" if xz else f"model, {ids.name}, lengths and GIT_SHA"
    print(f"bundle {out}: {what} {size / 2**20:.1f} MiB + wheels {wheel_size / 2**20:.1f} MiB")
    if size + wheel_size > LIMIT_MB * 2**20:
        raise ValueError(
            f"bundle and wheels are {(size + wheel_size) / 2**20:.1f} MiB, over {LIMIT_MB} MiB"
            + ("" if xz else "; try make_bundle(..., xz=True)")
        )
    return out
