"""Fixtures for the pulumi_stack inventory plugin tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pulumi_stack_helpers import parse, write_config, write_outputs

if TYPE_CHECKING:
    from ansible.inventory.data import InventoryData


@pytest.fixture
def inventory_from(tmp_path: Path) -> Callable[..., InventoryData]:
    """Write ``outputs`` next to a config file with ``options`` and parse it."""

    def run(outputs: Any, **options: Any) -> InventoryData:
        write_outputs(tmp_path, outputs)
        return parse(write_config(tmp_path, outputs_file="outputs.json", **options))

    return run


@pytest.fixture
def fake_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Put a stand-in for the Pulumi CLI (which cannot be installed here) first on PATH.

    It prints canned stdout/stderr and exits with a canned code, recording its argv and cwd, one call per
    line, so a test can check what the plugin asked for. It lives only in the test's tmp_path.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def install(stdout: str = "", stderr: str = "", exit_code: int = 0, sleep: float = 0) -> Path:
        calls = tmp_path / "pulumi-calls.jsonl"
        (tmp_path / "pulumi-stdout").write_text(stdout, encoding="utf-8")
        (tmp_path / "pulumi-stderr").write_text(stderr, encoding="utf-8")
        script = bin_dir / "pulumi"
        script.write_text(
            f"""#!{sys.executable}
import json, os, sys, time
with open({str(calls)!r}, "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd()}}) + "\\n")
time.sleep({sleep})
sys.stdout.write(open({str(tmp_path / "pulumi-stdout")!r}).read())
sys.stderr.write(open({str(tmp_path / "pulumi-stderr")!r}).read())
sys.exit({exit_code})
""",
            encoding="utf-8",
        )
        script.chmod(0o755)
        return calls

    return install
