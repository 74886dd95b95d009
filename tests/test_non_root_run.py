"""Non-root: a run that selects machine tests fails with one sentence; `-m "not localcloud"` still works.

pytest runs in a subprocess as user nobody (uid 65534). The venv's Python lives under /root (0700) here, so
the process keeps CAP_DAC_READ_SEARCH (read and traverse only, no writes, not root: geteuid() is 65534). ~3 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rayops.ansible_env import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="switching to user nobody needs root and setpriv",
)
NOBODY = 65534
MACHINE_TEST = "tests/cluster/test_security.py::test_s3_endpoint_listens_on_the_bridge_only"


def pytest_as_nobody(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(mode=0o777, exist_ok=True)
    home.chmod(0o777)
    tmp_path.chmod(0o777)
    argv = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--basetemp={home / 'basetemp'}",
        *args,
    ]
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_non_root_run_of_machine_tests_fails_with_one_sentence(tmp_path: Path) -> None:
    run = pytest_as_nobody(tmp_path, MACHINE_TEST)
    out = run.stdout + run.stderr
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    assert (
        "ERROR: 1 selected tests boot local-cloud machines (marker localcloud), which needs root: "
        "run them as root (sudo make test-cluster), or run `make test-unit` for the tests that need no "
        "machines"
    ) in out, out[-3000:]
    assert "skipped" not in out and "passed" not in out


def test_non_root_run_without_machine_tests_still_works(tmp_path: Path) -> None:
    # tests/localcloud/test_down_all.py: unmarked tests in a folder named localcloud are no machine tests
    # (the check read item.keywords, which hold the folder's name, and refused them)
    args = ["tests/test_contract.py", "tests/localcloud/test_down_all.py", MACHINE_TEST]
    run = pytest_as_nobody(tmp_path, "-m", "not localcloud", *args)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert " passed" in out and "1 deselected" in out, out[-3000:]
