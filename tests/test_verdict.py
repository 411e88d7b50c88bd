"""The verdict (analysis/verdict.py): three sentences, each claim checked against the numbers it quotes."""

import copy
import re
from pathlib import Path

import pytest

from attnpaper.analysis import answer, verdict
from attnpaper.analysis.answer import PUBLISHED

ROOT = Path(__file__).resolve().parent.parent / PUBLISHED


@pytest.fixture(scope="module")
def published():
    return answer.load(ROOT)


def test_the_published_records_support_every_claim(published):
    assert all(verdict.claims(published).values())
    text = verdict.markdown(published)
    sentences = re.split(r"(?<=[a-z)])\. (?=[A-Z])", text.removesuffix("."))
    assert len(sentences) == 3, sentences
    for words in ("H200", "all-MiniLM-L6-v2", "compile excluded", "with compile", "512 tokens", "T4"):
        assert words in text  # model, card and time measure said


def test_a_number_that_no_longer_supports_a_word_fails_naming_the_claim(published):
    ans = copy.deepcopy(published)
    ans["effects"].loc["flash", ["acc_low", "acc_high"]] = (-0.9, -0.1)  # flash now loses accuracy
    with pytest.raises(verdict.VerdictError, match="exact kernels: no accuracy difference detected"):
        verdict.markdown(ans)
    ans = copy.deepcopy(published)
    ans["long"]["effects"].loc["flash", ["compiled_low", "compiled_high"]] = (0.5, 0.9)  # a detected gain
    with pytest.raises(verdict.VerdictError, match="flash's gain at 512 tokens not detected"):
        verdict.check(ans)
    ans = copy.deepcopy(published)
    ans["effects"].loc["hybrid", "time_low"] = 0.95
    with pytest.raises(verdict.VerdictError, match="linear and hybrid: more training time"):
        verdict.check(ans)


def test_the_verdict_quotes_the_effects_it_rests_on(published):
    text = verdict.markdown(published)
    e = published["effects"]
    assert f"{e.loc['sdpa', 'time_ratio']:.2f}\u00d7 and {e.loc['flash', 'time_ratio']:.2f}\u00d7" in text
    assert f"loses {-e.loc['linear', 'acc_pts']:.2f} points" in text
