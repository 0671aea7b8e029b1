"""No module or class body defines the same function or class name twice.

ruff's F811 skips names that start with an underscore, so a second ``def _seed_everything``
in one module, silently replacing the first, went unnoticed; this test covers every name.
Alternatives are not redefinitions: ``@overload`` stubs, ``@x.setter``/``@x.deleter`` of a
property, and definitions in different branches of an ``if`` or a ``try``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("learnthumb", "examples", "benchmarks", "tests")
SKIPPED_FOLDERS = {".venv", "venv", "build", "csrc", "__pycache__", ".git"}
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_PROPERTY_PARTS = {"setter", "getter", "deleter"}
_TRIES = (ast.Try, ast.TryStar) if hasattr(ast, "TryStar") else (ast.Try,)  # except* from 3.11

Report = Callable[[str, int, int], None]


def python_files() -> Iterator[Path]:
    """The repository's own .py files (no virtual environments, build outputs, C sources)."""
    yield from sorted(ROOT.glob("*.py"))
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not SKIPPED_FOLDERS & set(path.relative_to(ROOT).parts):
                yield path


def _is_alternative(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> bool:
    """``@overload`` (typing's or typing_extensions') or a property's setter/getter/deleter."""
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Name) and decorator.id == "overload":
            return True
        if isinstance(decorator, ast.Attribute) and (
            decorator.attr == "overload" or decorator.attr in _PROPERTY_PARTS
        ):
            return True
    return False


def _defined(body: Sequence[ast.stmt], report: Report) -> dict[str, int]:
    """Names the statements define (name -> first line); ``report`` gets each redefinition."""
    seen: dict[str, int] = {}
    for statement in body:
        if isinstance(statement, _DEFINITIONS):
            names = {} if _is_alternative(statement) else {statement.name: statement.lineno}
            if isinstance(statement, ast.ClassDef):
                _defined(statement.body, report)
        elif isinstance(statement, ast.If):
            names = _either(_defined(statement.body, report), _defined(statement.orelse, report))
        elif isinstance(statement, _TRIES):
            names = _defined([*statement.body, *statement.orelse], report)
            for handler in statement.handlers:
                names = _either(names, _defined(handler.body, report))
            names = _sequence(names, _defined(statement.finalbody, report), report)
        elif isinstance(statement, (ast.With, ast.AsyncWith)):
            names = _defined(statement.body, report)
        else:
            continue
        seen = _sequence(seen, names, report)
    return seen


def _either(first: dict[str, int], second: dict[str, int]) -> dict[str, int]:
    """Names of two alternative branches: one of them runs, so no name is defined twice."""
    return {**second, **first}


def _sequence(before: dict[str, int], after: dict[str, int], report: Report) -> dict[str, int]:
    for name, line in after.items():
        if name == "_":  # the throwaway name, e.g. of functions registered by a decorator
            continue
        if name in before:
            report(name, before[name], line)
        else:
            before[name] = line
    return before


def redefinitions(source: str, filename: str = "<string>") -> list[str]:
    """``"filename:line: name ..."`` for each function or class a body defines again."""
    found: list[str] = []

    def report(name: str, first: int, again: int) -> None:
        found.append(f"{filename}:{again}: {name!r} is defined again (first at line {first})")

    _defined(ast.parse(source, filename).body, report)
    return sorted(found, key=lambda line: int(line.split(":")[1]))


def test_no_module_or_class_defines_a_name_twice():
    found = []
    for path in python_files():
        found += redefinitions(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []


def test_the_check_finds_a_private_redefinition_ruff_misses(tmp_path):
    module = tmp_path / "trainer.py"
    module.write_text(
        "import random\n"
        "\n"
        "def _seed_everything(seed):\n"
        "    random.seed(seed)\n"
        "\n"
        "class Trainer:\n"
        "    def _step(self): ...\n"
        "    def _step(self): ...\n"
        "\n"
        "def _seed_everything(seed):\n"
        "    random.seed(seed + 1)\n"
    )
    assert redefinitions(module.read_text(), "trainer.py") == [
        "trainer.py:8: '_step' is defined again (first at line 7)",
        "trainer.py:10: '_seed_everything' is defined again (first at line 3)",
    ]


def test_alternatives_are_not_redefinitions():
    source = (
        "from typing import TYPE_CHECKING, overload\n"
        "if TYPE_CHECKING:\n"
        "    class Tensor: ...\n"
        "else:\n"
        "    class Tensor: ...\n"
        "try:\n"
        "    def _fast(): ...\n"
        "except ImportError:\n"
        "    def _fast(): ...\n"
        "@overload\n"
        "def f(x: int) -> int: ...\n"
        "@overload\n"
        "def f(x: str) -> str: ...\n"
        "def f(x): return x\n"
        "class A:\n"
        "    @property\n"
        "    def x(self): return 1\n"
        "    @x.setter\n"
        "    def x(self, value): pass\n"
    )
    assert redefinitions(source) == []
    assert redefinitions(source + "def _fast(): ...\n") == [
        "<string>:20: '_fast' is defined again (first at line 7)"
    ]
