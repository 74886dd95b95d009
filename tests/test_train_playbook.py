"""train.yml checks its inputs on the controller before any node is touched, and its defaults give way to the
vars of a playbook that imports it (the Molecule scenarios pass their dataset so). No machines: the head is
127.0.0.1 on a closed port, so a run that went past the checks would fail unreachable. ~10 s."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rayops.ansible_env import BIN, REPO, ansible_env

INVENTORY = """\
all:
  children:
    ray_cluster:
      children:
        ray_head:
          hosts:
            nohead:
              ansible_host: 127.0.0.1
              ansible_port: 9
"""


def _play(tmp_path: Path, playbook: Path, *args: str) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    env = {**ansible_env(), "ANSIBLE_INVENTORY_ENABLED": "yaml", "ANSIBLE_TIMEOUT": "5"}
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_an_importing_playbooks_dataset_wins_over_the_default(tmp_path: Path) -> None:
    """A regression: with the defaults in vars_files they outranked import_playbook's vars, and Molecule's
    cluster scenario trained on the default URL instead of its own CSV."""
    wrapper = tmp_path / "wrapper.yml"
    wrapper.write_text(
        f"- name: Import train.yml\n  ansible.builtin.import_playbook: {REPO / 'train.yml'}\n"
        "  vars:\n    dataset: /nonexistent/imported.csv\n",
        encoding="utf-8",
    )
    proc = _play(tmp_path, wrapper)
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert "The dataset /nonexistent/imported.csv does not exist on this controller" in out, proc.stdout
    assert "deploy the workflow package" not in proc.stdout


@pytest.mark.parametrize(
    ("extra", "sentence"),
    [
        (["-e", "target_zone=4"], "target_zone must be 1, 2 or 3 (got 4)"),
        (["-e", "dataset=/nonexistent/power.csv"], "The dataset /nonexistent/power.csv does not exist"),
        (["-e", "train_run_id=a/b"], 'train_run_id "a/b" is not usable as a run id'),
    ],
    ids=["zone", "dataset", "run-id"],
)
def test_bad_input_stops_before_any_node_task(tmp_path: Path, extra: list[str], sentence: str) -> None:
    proc = _play(tmp_path, REPO / "train.yml", *extra)
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert sentence in out, proc.stdout[-3000:]
    assert "UNREACHABLE" not in proc.stdout and "deploy the workflow package" not in proc.stdout
