"""Every name the README tells a user to use can be imported where the README says.

A newcomer copies names from the README: `InvalidOption` and
`SecondsFieldWarning` were named there but raised ImportError from `jobstead`.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import jobstead

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "runtime" / "jobstead"
README = (REPO / "README.md").read_text(encoding="utf-8")

# Kubernetes kinds the README names in backticks; the Python class of the same
# name in `cron/schedule.py` is internal.
KINDS = {"CronSchedule", "JobHandler"}


def _code() -> list[str]:
    """The README's inline code spans and fenced Python blocks: where it names API."""
    return re.findall(r"`([^`\n]+)`", README) + re.findall(r"```python\n(.*?)```", README, re.S)


def _explicit_imports() -> dict[str, str]:
    """``name -> module`` for every ``from jobstead... import ...`` the README shows."""
    found: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        for match in re.finditer(r"^from (jobstead[\w.]*) import \(?([^)\n]+(?:\n[^)]*)?)\)?", block, re.M):
            for name in re.split(r"[,\s]+", match.group(2)):
                if name.isidentifier():
                    found[name] = match.group(1)
    return found


def _public_classes() -> set[str]:
    """Top-level classes of the runtime's non-private modules."""
    names: set[str] = set()
    for path in RUNTIME.rglob("*.py"):
        parts = path.relative_to(RUNTIME).parts
        if any(part.startswith("_") and part != "__init__.py" for part in parts):
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                names.add(node.name)
    return names


def test_every_import_the_readme_shows_works() -> None:
    imports = _explicit_imports()
    assert imports, "the README's examples import nothing from jobstead: the parser is broken"
    missing = [
        f"from {module} import {name}"
        for name, module in sorted(imports.items())
        if not hasattr(importlib.import_module(module), name)
    ]
    assert not missing, missing


def test_every_class_the_readme_names_is_exported_by_jobstead() -> None:
    mentioned = {token for span in _code() for token in re.findall(r"\b[A-Z][A-Za-z0-9]+\b", span)}
    explicit = _explicit_imports()
    expected = (mentioned & _public_classes()) - KINDS - {n for n, m in explicit.items() if m != "jobstead"}
    assert {"InvalidOption", "SecondsFieldWarning", "RetryPolicy"} <= expected
    missing = sorted(name for name in expected if name not in jobstead.__all__ or not hasattr(jobstead, name))
    assert not missing, f"named in the README but not exported by jobstead: {missing}"
