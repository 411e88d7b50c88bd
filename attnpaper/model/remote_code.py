"""attnpaper's model classes for transformers' ``trust_remote_code`` loading.

A saved flash, linear or hybrid model carries a copy of this file (as ``attnpaper_model.py``) and an
``auto_map`` in its config.json that names it, so that ``from_pretrained(dir, trust_remote_code=True)``
and ``pipeline(..., trust_remote_code=True)`` work in a process that never imported attnpaper: the
copy takes the real classes from the installed package, where the attention kernels live, one config
and one classifier per model family (attnpaper.model.families), so the copy never names a family.
"""

try:
    from attnpaper.model.auto import REMOTE_CLASSES
except ModuleNotFoundError as err:  # in a try: transformers' import scan then leaves the message to us
    if not (err.name or "").startswith("attnpaper"):
        raise
    raise ImportError(
        f"this model's attention (an attnpaper variant: flash, linear or hybrid) needs the attnpaper "
        f"package, which is missing here (no module {err.name!r}): pip install attnpaper"
    ) from None

globals().update(REMOTE_CLASSES)  # AttnpaperBertConfig, AttnpaperBertForSequenceClassification, ...
__all__ = sorted(REMOTE_CLASSES)
