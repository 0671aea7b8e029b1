"""The README's usage example runs as written, and the docs name every public API."""

import ast
import inspect
import re
from pathlib import Path

import learnthumb

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_readme_usage_examples_run():
    readme = (ROOT / "README.md").read_text()
    usage = readme.split("## Usage", 1)[1].split("\n## ", 1)[0]
    recommended, distilled = _python_blocks(usage)
    namespace: dict = {}
    exec(compile(recommended, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (4, 10)
    namespace = {}
    exec(compile(distilled, "README.md", "exec"), namespace)
    assert set(namespace["losses"]) == {"moment", "feature", "logit"}
    assert namespace["logits"].shape == (4, 10)


def test_api_reference_lists_every_public_name():
    api = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name in learnthumb.__all__ if name != "__version__" and name not in api]
    assert not missing, f"docs/api.md does not document {missing}"


def test_api_reference_defaults_match_the_signatures():
    api = (ROOT / "docs" / "api.md").read_text()
    wrong = []
    for name, arguments in re.findall(r"^\| `(\w+)\(([^`]*)\)`", api, flags=re.MULTILINE):
        parameters = inspect.signature(getattr(learnthumb, name)).parameters
        for part in re.split(r",\s*(?![^()\[\]]*[)\]])", arguments):
            key, equals, text = part.partition("=")
            if not equals:
                continue
            try:
                documented = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                continue  # an expression such as 0.5/255
            actual = parameters[key.strip()].default
            if actual != documented:
                wrong.append(f"{name}({key.strip()}={documented!r}), real default {actual!r}")
    assert not wrong, f"docs/api.md states wrong defaults: {wrong}"
