"""Every plugin's documentation parses: `ansible-doc` shows it (a YAML slip there hides the options from users
and from ansible-lint, which only warns). ~3 s."""

from __future__ import annotations

import pytest

from rayops.ansible_env import run_ansible


@pytest.mark.parametrize(
    ("kind", "name", "option"),
    [("module", "ray_job", "submission_id"), ("inventory", "pulumi_stack", "jump_via_head")],
)
def test_ansible_doc_shows_the_plugin(kind: str, name: str, option: str) -> None:
    proc = run_ansible("ansible-doc", "-t", kind, name, timeout=120)
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr[-2000:]
    assert option in proc.stdout, proc.stdout[-2000:]
