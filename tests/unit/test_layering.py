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
OPERATOR = REPO / "operator"

#: What the store may import from the rest of Jobstead: value types and the
#: small pure modules below the API, never the API, the processes or the CLI.
STORE_MAY_IMPORT = (
    "jobstead.store",
    "jobstead.clock",
    "jobstead.config",
    "jobstead.cron.schedule",
    "jobstead.errors",
    "jobstead.flow",  # a handler's flow control settings, values only
    "jobstead.json_values",
    "jobstead.retry",
    "jobstead.status",
    "jobstead.transitions",  # every change of a job's status, pure (imports value types only)
    "jobstead.migrations",
    "jobstead.metrics.worker",  # the deferred counter, counted where jobs are inserted
    "jobstead.tracing",  # the defer span, opened where jobs are inserted (imports nothing of Jobstead at run time)
)


#: The processes: what runs jobs and crons and does the maintenance duties.
PROCESSES = ("worker", "cron/scheduler.py", "services", "lifecycle.py")

#: What the processes may import from the rest of Jobstead: the store and the API's value
#: types (what a handler sees, errors, hooks, signatures), never the API's objects
#: (``App``, ``Handler``, ``Batch``, ``Deferred``), the CLI or the dashboard: an app hands
#: a worker what it needs (``WorkerEnvironment``), a scheduler its scope (``CronScope``).
PROCESSES_MAY_IMPORT = (
    "jobstead.store",
    "jobstead.worker",
    "jobstead.cron",
    "jobstead.services",
    "jobstead.lifecycle",
    "jobstead.cancel",
    "jobstead.clock",
    "jobstead.config",
    "jobstead.context",
    "jobstead.errors",
    "jobstead.flow",
    "jobstead.hooks",
    "jobstead.json_values",
    "jobstead.logs",
    "jobstead.metrics.server",
    "jobstead.metrics.worker",
    "jobstead.retry",
    "jobstead.signature",
    "jobstead.status",
    "jobstead.tracing",
    "jobstead.transitions",  # what each end of an attempt makes of the job (``decide`` picks one)
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(OPERATOR if path.is_relative_to(OPERATOR) else RUNTIME).with_suffix("").parts)
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


def process_modules() -> list[Path]:
    found: list[Path] = []
    for part in PROCESSES:
        path = PACKAGE / part
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def upward_imports_of_processes(sources: dict[Path, str] | None = None) -> list[str]:
    """``path:line imports name`` for each import of a process module outside ``PROCESSES_MAY_IMPORT``."""
    return [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in process_modules()
        for line, name in imports(path, (sources or {}).get(path))
        if name.split(".")[0] == "jobstead" and not allowed(name, PROCESSES_MAY_IMPORT)
    ]


def test_the_processes_import_only_the_store_and_value_types() -> None:
    broken = upward_imports_of_processes()
    assert not broken, "a process imports the API, the CLI or the dashboard:\n" + "\n".join(broken)


def test_the_processes_checker_sees_an_import_of_the_app() -> None:
    """The rule above can fail: the runner importing ``Handler`` (even for typing only) is reported."""
    runner = PACKAGE / "worker" / "runner.py"
    source = runner.read_text().replace(
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nfrom typing import TYPE_CHECKING\n\n"
        "if TYPE_CHECKING:\n    from ..handler import Handler\n    from .. import app\n",
        1,
    )
    broken = upward_imports_of_processes({runner: source})
    assert [b.rsplit(" imports ", 1)[1] for b in broken] == ["jobstead.handler", "jobstead.app"]


def test_the_runtime_knows_nothing_of_kubernetes() -> None:
    # ``jobstead operator`` starts the operator, imported on that command only.
    launcher = PACKAGE / "cli" / "operator.py"
    # The dashboard's Operator page reads JobHandlers with the Kubernetes client (never kopf or the operator).
    reader = PACKAGE / "dashboard" / "cluster.py"
    broken = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != launcher
        for line, name in imports(path)
        if name.split(".")[0]
        in ({"kopf", "jobstead_operator"} if path == reader else {"kopf", "kubernetes", "jobstead_operator"})
    ]
    assert not broken, "\n".join(broken)


def test_the_checker_sees_an_upward_import() -> None:
    """The rule above can fail: a store module importing the API is reported, a value type is not."""
    records = PACKAGE / "store" / "records.py"
    source = "from ..signature import check_json\nfrom ..status import JobStatus\nfrom .drivers import base\n"
    found = list(imports(records, source))
    assert found == [(1, "jobstead.signature"), (2, "jobstead.status"), (3, "jobstead.store.drivers.base")]
    assert [name for _, name in found if not allowed(name, STORE_MAY_IMPORT)] == ["jobstead.signature"]


#: What the operator may import from the runtime: its public API (``from jobstead import ...``, and
#: nothing else of that package itself), the store and the metrics; and three modules it rightly shares
#: with the processes: ``config`` (a Secret's URL, schema and table prefix resolved as a worker
#: resolves them), ``cron.scheduler`` (it runs the cron scheduler of every database it manages) and
#: ``flow`` (values only: the ``FlowControl`` a JobHandler's fields become).
OPERATOR_MAY_IMPORT = (
    "jobstead.store",
    "jobstead.metrics",
    "jobstead.config",
    "jobstead.cron.scheduler",
    "jobstead.flow",  # a JobHandler's flow control, built as the values the handler row carries
)


def operator_imports_beyond_its_rule(path: Path, source: str | None = None) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for line, name in imports(path, source)
        if name.split(".")[0] == "jobstead" and name != "jobstead" and not allowed(name, OPERATOR_MAY_IMPORT)
    ]


def test_the_operator_imports_the_runtime_through_its_public_api_the_store_and_the_metrics() -> None:
    broken = [
        problem
        for path in sorted((OPERATOR / "jobstead_operator").rglob("*.py"))
        for problem in operator_imports_beyond_its_rule(path)
    ]
    assert not broken, "the operator reaches into the runtime:\n" + "\n".join(broken)


def test_the_operator_checker_sees_a_reach_into_the_runtime() -> None:
    """The rule above can fail: the public API and the store pass, the worker and a private module do not."""
    spec = OPERATOR / "jobstead_operator" / "spec.py"
    source = (
        "from jobstead import RetryPolicy\n"
        "from jobstead.store import CronDefinition\n"
        "from jobstead.worker.outcome import decide\n"
        "from jobstead import signature\n"
        "from .reasons import Reason\n"
    )
    assert operator_imports_beyond_its_rule(spec, source) == [
        "operator/jobstead_operator/spec.py:3 imports jobstead.worker.outcome",
        "operator/jobstead_operator/spec.py:4 imports jobstead.signature",
    ]
