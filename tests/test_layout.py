"""The package's architecture, checked from its imports: every import runs down a floor, never up, no circles.

Floors, bottom to top (a module may import its own floor and those below):
files, variants < attention < model < training < experiment < analysis < bench < the command line (cli, __main__).
"""

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "attnpaper"
FLOORS = [
    ("files", "variants"),
    ("attention",),
    ("model",),
    ("training",),
    ("experiment",),
    ("analysis",),
    ("bench",),
    ("cli", "__main__", "__init__"),
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def modules() -> dict[str, Path]:
    """Dotted module name under attnpaper -> file, e.g. 'training.loop'."""
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG).with_suffix("").parts
        out[".".join(parts)] = p
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of attnpaper that ``name`` imports anywhere in its file (lazy imports in functions too)."""
    pkg = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("attnpaper"):
                target = node.module[len("attnpaper.") :] if node.module != "attnpaper" else ""
            else:
                continue
            for alias in node.names:  # `from . import x` imports module x when x is one
                sub = f"{target}.{alias.name}".strip(".")
                found.add(sub if sub in known or f"{sub}.__init__" in known else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("attnpaper."):
                    found.add(alias.name[len("attnpaper.") :])
    resolved = set()
    for t in found:
        if t in known:
            resolved.add(t)
        elif f"{t}.__init__" in known:
            resolved.add(f"{t}.__init__")
        elif t == "":
            resolved.add("__init__")
    resolved.discard(name)
    return resolved


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def floor(name: str) -> int:
    head = name.split(".")[0]
    if head not in FLOOR:
        raise AssertionError(f"module attnpaper.{name} is on no floor: add its subpackage to FLOORS")
    return FLOOR[head]


def test_every_module_is_on_a_floor():
    for name in modules():
        floor(name)


def upward(g) -> list[str]:
    up = []
    for name, targets in g.items():
        if name == "__init__":  # the package's front door may name anything (lazily)
            continue
        for t in targets:
            if t.endswith("__init__") and t.split(".")[0] == name.split(".")[0]:
                continue  # a subpackage's own __init__
            if t == "__init__" and floor(name) < FLOOR["__init__"]:
                up.append(f"{name} -> attnpaper (import the module that holds it instead)")
            elif t != "__init__" and floor(t) > floor(name):
                up.append(f"{name} (floor {floor(name)}) -> {t} (floor {floor(t)})")
    return up


def test_no_import_runs_up():
    up = upward(graph())
    assert not up, "imports that run back up:\n" + "\n".join(sorted(up))


def test_no_circles():
    g = graph()
    state, stack, circles = {}, [], []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for t in sorted(g.get(n, ())):
            if t.endswith("__init__"):
                continue  # package fronts only re-export
            if state.get(t) == 1:
                circles.append(" -> ".join(stack[stack.index(t) :] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_readme_layout_lists_every_module():
    readme = (PKG.parent / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(attnpaper/[\w/]+\.py)`", section))
    present = {
        f"attnpaper/{p.relative_to(PKG).as_posix()}"
        for p in PKG.rglob("*.py")
        if p.name != "__init__.py" or p.parent == PKG
    }
    assert not present - listed, f"modules missing from the README's layout: {sorted(present - listed)}"
    assert not listed - present, f"the README's layout names modules that do not exist: {sorted(listed - present)}"


def test_the_checks_catch_what_they_forbid(tmp_path):
    """A lazy upward import inside a function is found and reported."""
    f = tmp_path / "loop.py"
    f.write_text("def f():\n    from ..experiment.records import git_sha\n")
    g = {"training.loop": imports_of("training.loop", f, {"training.loop", "experiment.records"})}
    assert g["training.loop"] == {"experiment.records"}
    assert upward(g) == ["training.loop (floor 3) -> experiment.records (floor 4)"]
