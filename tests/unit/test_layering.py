"""The import rules of docs/ARCHITECTURE.md ("The layers"), checked on the source.

A rule that only a page states erodes one convenient import at a time; these
read every module's imports (with ``ast``, relative ones resolved) and name
the module and line that breaks a rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import REPO

RUNTIME = REPO / "runtime"
PACKAGE = RUNTIME / "jobstead"

#: What the store may import from the rest of Jobstead: value types and the
#: small pure modules below the API, never the API, the processes or the CLI.
STORE_MAY_IMPORT = (
    "jobstead.store",
    "jobstead.clock",
    "jobstead.config",
    "jobstead.cron.schedule",
    "jobstead.errors",
    "jobstead.json_values",
    "jobstead.retry",
    "jobstead.status",
    "jobstead.transitions",  # every change of a job's status, pure (imports value types only)
    "jobstead.migrations",
    "jobstead.metrics.worker",  # the deferred counter, counted where jobs are inserted
    "jobstead.tracing",  # the defer span, opened where jobs are inserted (imports nothing of Jobstead at run time)
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(RUNTIME).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


def imports(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """Every Jobstead-or-other module ``path`` imports, absolute, with its line.

    ``from x import y`` counts as importing ``x.y`` when ``y`` is a module, else ``x``.
    """
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield node.lineno, submodule if target.startswith("jobstead") and is_module(submodule) else target


def allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_store_imports_only_value_types_from_the_rest_of_jobstead() -> None:
    broken = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in sorted((PACKAGE / "store").rglob("*.py"))
        for line, name in imports(path)
        if name.split(".")[0] == "jobstead" and not allowed(name, STORE_MAY_IMPORT)
    ]
    assert not broken, "the store imports upward:\n" + "\n".join(broken)


def test_the_runtime_knows_nothing_of_kubernetes() -> None:
    # ``jobstead operator`` starts the operator, imported on that command only.
    launcher = PACKAGE / "cli" / "operator.py"
    broken = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != launcher
        for line, name in imports(path)
        if name.split(".")[0] in {"kopf", "kubernetes", "jobstead_operator"}
    ]
    assert not broken, "\n".join(broken)


def test_the_checker_sees_an_upward_import() -> None:
    """The rule above can fail: a store module importing the API is reported, a value type is not."""
    records = PACKAGE / "store" / "records.py"
    source = "from ..signature import check_json\nfrom ..status import JobStatus\nfrom .drivers import base\n"
    found = list(imports(records, source))
    assert found == [(1, "jobstead.signature"), (2, "jobstead.status"), (3, "jobstead.store.drivers.base")]
    assert [name for _, name in found if not allowed(name, STORE_MAY_IMPORT)] == ["jobstead.signature"]
