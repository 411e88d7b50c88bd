"""The git sha a record or a bundle keeps is this checkout's, never that of a repository around a copy."""

from __future__ import annotations

import subprocess

from attnpaper.__main__ import main
from attnpaper.experiment import bundle, records


def git(cwd, *args) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def project(folder, name="attnpaper"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    return folder


def test_only_a_repository_whose_top_is_the_checkout_gives_its_sha(tmp_path):
    outer = project(tmp_path / "outer")
    git(outer, "init", "-q")
    git(outer, "commit", "-q", "--allow-empty", "-m", "outer")
    copy = project(outer / "copy")  # a checkout's copy without .git, inside another repository
    assert records.checkout_sha(outer) == git(outer, "rev-parse", "HEAD")
    assert records.checkout_sha(copy) is None
    assert records.checkout_sha(project(tmp_path / "other", name="not-attnpaper")) is None
    assert records.checkout_sha(project(tmp_path / "bare")) is None  # no repository at all
    assert records.checkout_sha() == git(records.__file__.rsplit("/", 3)[0], "rev-parse", "HEAD")  # this checkout


def test_bundle_refuses_a_copy_without_git_before_any_work(tmp_path, capsys, monkeypatch):
    outer = project(tmp_path / "outer")
    git(outer, "init", "-q")
    git(outer, "commit", "-q", "--allow-empty", "-m", "outer")
    copy = project(outer / "copy")
    real = records.checkout_sha
    monkeypatch.setattr(records, "checkout_sha", lambda root=None: real(root or copy))  # as if run from the copy
    monkeypatch.delenv(records.GIT_SHA_ENV, raising=False)
    monkeypatch.setattr(bundle, "export_fp16", lambda *a, **k: (_ for _ in ()).throw(AssertionError("exported")))
    monkeypatch.chdir(tmp_path)
    assert main(["bundle", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no git sha to record" in err and records.GIT_SHA_ENV in err, err
    assert not (tmp_path / "b").exists()  # refused before the folder was made
    monkeypatch.setenv(records.GIT_SHA_ENV, "f" * 40)  # said explicitly: written as given
    assert records.git_sha() == "f" * 40
