"""``jobstead operator`` refuses bad settings in one line, before it talks to any cluster or database."""

from __future__ import annotations

import pytest

from tests.support.processes import run_cli

PASSWORD = "Hunter2-xq9"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"JOBSTEAD_DATABASE_URL": f"oracle://ops:{PASSWORD}@db/ops"}, "unsupported database 'oracle'"),
        ({"JOBSTEAD_DATABASE_URL": f"mysql://ops:{PASSWORD}@db/ops"}, "no Kubernetes configuration: not in a pod"),
        ({"JOBSTEAD_DATABASE_URL": f"::nonsense:{PASSWORD}@"}, "is not a database URL"),
        ({"JOBSTEAD_OPERATOR_MIGRATE": "maybe"}, "$JOBSTEAD_OPERATOR_MIGRATE must be true or false"),
    ],
)
def test_bad_settings_are_one_line_without_the_password(env: dict[str, str], expected: str) -> None:
    done = run_cli(["operator", "-n", "shop"], {"KUBECONFIG": "/nonexistent", **env})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert PASSWORD not in done.stderr + done.stdout
