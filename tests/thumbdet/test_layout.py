"""The package layout of ``docs/architecture.md``: which part of ``thumbdet`` may import which.

Every ``import thumbdet...`` of every module, at the top or inside a function, is checked
against the rules drawn in the architecture document, so a shortcut that would tie the parts
together (a model importing the training loop, the loop importing the CLI) fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import thumbdet

PACKAGE = Path(thumbdet.__file__).parent

#: Part -> the parts it may import (besides itself). A part is a subpackage or a top-level
#: module of ``thumbdet``; ``thumbdet`` itself is the package's ``__init__`` (the version).
ALLOWED = {
    "ops": set(),
    "data": {"files"},
    "validation": set(),
    "files": set(),
    "settings": {"validation"},
    "distributed": set(),
    "models": {"ops", "checkpoints"},
    "checkpoints": {"thumbdet", "models", "training"},
    "evaluation": {
        "checkpoints", "data", "distributed", "files", "models", "settings", "training",
        "validation",
    },
    "training": {
        "checkpoints", "data", "distributed", "evaluation", "files", "models", "settings",
        "validation",
    },
    "inference_options": {"ops", "settings"},
    "fastpath": {"inference_options", "models", "ops", "training"},
    "thumbnails": {"data", "checkpoints"},
    "export": {"ops", "thumbnails", "models", "checkpoints"},
    "experiments": {
        "checkpoints", "data", "evaluation", "files", "models", "settings", "thumbnails",
        "training",
    },
    "cli": None,  # the commands: anything
    "__main__": {"cli"},
    "thumbdet": None,  # the package's lazy names
}  # fmt: skip
#: Parts that may use only the torch-free settings of ``training`` (not the loop).
SETTINGS_ONLY = {"checkpoints", "evaluation", "fastpath"}
TRAINING_SETTINGS = (
    "thumbdet.training.config",
    "thumbdet.training.groups",
    "thumbdet.training.model_overrides",
    "thumbdet.training.modes",  # the registry of mode names (fastpath's variants)
)


def _part(module: str) -> str:
    names = module.split(".")
    return names[1] if len(names) > 1 else "thumbdet"


def _imports() -> list[tuple[str, str]]:
    """``(importing module, imported module)`` for every ``thumbdet`` import."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            found += [(module, t) for t in targets if t.split(".")[0] == "thumbdet"]
    return found


def test_every_part_is_in_the_rules():
    parts = {_part(module) for module, _ in _imports()}
    assert parts <= set(ALLOWED), parts - set(ALLOWED)


def test_parts_import_only_what_the_architecture_allows():
    wrong = []
    for module, target in _imports():
        source, destination = _part(module), _part(target)
        allowed = ALLOWED[source]
        if source == destination or allowed is None:
            continue
        if destination not in allowed:
            wrong.append(f"{module} imports {target}")
        elif (
            destination == "training"
            and source in SETTINGS_ONLY
            and not target.startswith(TRAINING_SETTINGS)
        ):
            wrong.append(f"{module} imports {target} (only training's settings)")
    assert wrong == []


def test_the_loop_never_imports_the_experiments_or_the_commands():
    for module, target in _imports():
        if _part(module) not in ("cli", "experiments", "__main__", "thumbdet"):
            assert _part(target) not in ("cli", "experiments"), (module, target)
