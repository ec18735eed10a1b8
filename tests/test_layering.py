"""The import contract between the packages, checked on every import statement (including
those inside functions) of every module, and the purity of the pipeline stages.

    raman_core       imports none of the others        (the neutral domain layer)
    firmware_bridge  imports raman_core only           (the instrument side)
    edge             imports raman_core, firmware_bridge, models (never trainer)
    trainer          may import everything
    edge/preprocess.py, edge/deconv.py: no file I/O (pure stages; the bundle code loads weights)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("raman_core", "firmware_bridge", "edge", "trainer", "models")
FORBIDDEN = {
    "raman_core": {"firmware_bridge", "edge", "trainer", "models"},
    "models": {"firmware_bridge", "edge", "trainer"},
    "firmware_bridge": {"edge", "trainer", "models"},
    "edge": {"trainer"},
    "trainer": set(),
}
PURE_MODULES = ("edge/preprocess.py", "edge/deconv.py")
IO_CALLS = {
    "open",
    "load",
    "save",
    "savez",
    "savez_compressed",
    "loadtxt",
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
    "fromfile",
    "tofile",
    "genfromtxt",
}


def imported_packages(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in `source`, wherever it appears."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", ""))
            in (
                "import_module",
                "__import__",
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def violations(root: Path) -> list[str]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            for line, target in imported_packages(path.read_text(encoding="utf-8"), str(path)):
                if target in FORBIDDEN[pkg]:
                    out.append(f"{path.relative_to(root)}:{line} imports {target}")
    return out


def io_calls(source: str, filename: str) -> list[str]:
    calls = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in IO_CALLS:
                calls.append(f"{filename}:{node.lineno} calls {name}()")
    return calls


def test_no_forbidden_imports_anywhere() -> None:
    assert violations(ROOT) == []


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_stages_do_no_io(module: str) -> None:
    assert io_calls((ROOT / module).read_text(encoding="utf-8"), module) == []


def test_checker_catches_imports_inside_functions(tmp_path: Path) -> None:
    # The contract is only as good as its checker: a function-level import, a from-import and
    # importlib.import_module must all be seen.
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "firmware_bridge" / "a.py").write_text("def f():\n    from edge.preprocess import preprocess\n")
    (tmp_path / "edge" / "b.py").write_text("import importlib\nm = importlib.import_module('trainer.rruff')\n")
    (tmp_path / "raman_core" / "c.py").write_text("import numpy\nif True:\n    import edge.errors\n")
    assert violations(tmp_path) == [
        "raman_core/c.py:3 imports edge",
        "firmware_bridge/a.py:2 imports edge",
        "edge/b.py:2 imports trainer",
    ]


def test_io_checker_sees_a_load() -> None:
    assert io_calls("import numpy as np\ndef f(p):\n    return np.load(p)\n", "x.py") == ["x.py:3 calls load()"]
