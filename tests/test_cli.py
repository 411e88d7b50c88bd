"""The command line as one parser (attnpaper.cli, one module per command): every --help instant and showing
its defaults, usage errors one line at every depth, scaling's option names kept equal to the kernels'."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnpaper.__main__ import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "papermill", "pandas")


def parsers(parser=None, path=("python -m attnpaper",)):
    """Every (command path, parser) of the command line, sub-commands of sub-commands included."""
    parser = parser or build_parser()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


def test_every_command_is_a_module_with_its_parts():
    names = [c.NAME for c in COMMANDS]
    assert names == ["sweep", "bench", "bundle", "table", "paper-memory", "profile-ops", "scaling", "trainer-ref"]
    for command in COMMANDS:
        assert callable(command.add_arguments) and callable(command.run) and command.HELP, command.__name__


@pytest.mark.parametrize("path", [p for p, _ in parsers()], ids=" ".join)
def test_every_option_shows_its_default(path):
    parser = dict(parsers())[path]
    text = parser.format_help()
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.default == argparse.SUPPRESS:
            continue
        assert action.help and "default:" in parser._get_formatter()._get_help_string(action), (
            f"{' '.join(path)} {action.option_strings[0]} shows no default in --help"
        )
    assert "default: [" not in " ".join(text.split()), "a list default shown as a Python list, not as typed"


@pytest.mark.parametrize(
    "argv, says",
    [
        (["scaling"], "required: {kernels,model,all} (see python -m attnpaper scaling --help)"),
        (["scaling", "kernels", "--lengths", "x"], "invalid int value: 'x' (see python -m attnpaper scaling kernels"),
        (["scaling", "model", "--mechanisms", "eager"], "unrecognized arguments: --mechanisms eager"),
        (["sweep", "--seeds", "one"], "argument --seeds: invalid int value: 'one'"),
        (["table"], "the following arguments are required: dirs"),
    ],
)
def test_a_usage_error_is_one_line_at_every_depth(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and says in err, err


def test_scaling_names_its_options_without_torch_as_the_kernels_do():
    from attnpaper.bench import kernels as K
    from attnpaper.bench import scaling as SC

    assert SC.MECHANISMS == tuple(K.MECHANISMS) and SC.PASSES == K.PASSES


@pytest.mark.parametrize(
    "argv",
    [[], ["scaling"], ["scaling", "model"], ["sweep"], ["bench"], ["paper-memory"], ["profile-ops"], ["trainer-ref"]],
)
def test_help_imports_nothing_heavy(argv, tmp_path):
    """`python -m attnpaper ... --help` reads no torch: it answers at once (issue 37: scaling's took 6-7 s)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-X", "importtime", "-m", "attnpaper", *argv, "--help"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m attnpaper"), proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert not imported & set(HEAVY), f"--help imported {sorted(imported & set(HEAVY))}"
