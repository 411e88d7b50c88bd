"""The package's rule "no function longer than 80 lines", checked from the source with ast.

A function's length runs from its ``def`` line to its last line (decorators left out, docstring and
nested functions in). The functions still over the limit are listed in KNOWN_LONG, each under the
helper who owns its file; an entry that is no longer over the limit fails too, so the list shows
exactly what remains.
"""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "attnpaper"
LIMIT = 80

KNOWN_LONG: dict[str, str] = {
    # "analysis/x.py:name": "owner (issue 36, variant table)", one line per function still over LIMIT
}
"""'path under attnpaper:function' -> who shortens it. Empty: every function is within the limit."""


def long_functions(source: str, limit: int = LIMIT) -> dict[str, int]:
    """Functions (methods and nested functions too, by name) in ``source`` longer than ``limit`` lines."""
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                out[node.name] = length
    return out


def package_long_functions() -> dict[str, int]:
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        for name, length in long_functions(path.read_text()).items():
            found[f"{path.relative_to(PKG).as_posix()}:{name}"] = length
    return found


def test_no_function_in_the_package_is_longer_than_80_lines():
    found = package_long_functions()
    new = {k: v for k, v in found.items() if k not in KNOWN_LONG}
    assert not new, f"functions over {LIMIT} lines (shorten them): {new}"


def test_the_known_long_functions_are_still_long():
    """A function shortened (or gone) leaves the list: the list is what remains to do."""
    found = package_long_functions()
    stale = sorted(k for k in KNOWN_LONG if k not in found)
    assert not stale, f"within {LIMIT} lines now or gone, remove from KNOWN_LONG: {stale}"


def test_the_count_runs_from_def_to_the_last_line():
    def lines(n: int, indent: int) -> str:
        return "".join(f"{' ' * indent}x{i} = {i}\n" for i in range(n))

    decorated = "@decorator\ndef f():\n{}"
    assert long_functions(decorated.format(lines(LIMIT - 1, 4))) == {}  # def line + 79 = 80 lines
    assert long_functions(decorated.format(lines(LIMIT, 4))) == {"f": LIMIT + 1}
    nested = "class C:\n    def g(self):\n        def h():\n" + lines(LIMIT - 2, 12)
    assert long_functions(nested) == {}  # g: 80 lines, h: 79
    assert long_functions(nested + lines(1, 12)) == {"g": LIMIT + 1}
    assert long_functions(nested + lines(2, 12)) == {"g": LIMIT + 2, "h": LIMIT + 1}
    assert long_functions("async def a():\n" + "    pass\n" * LIMIT) == {"a": LIMIT + 1}
