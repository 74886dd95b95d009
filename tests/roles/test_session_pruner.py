"""The Ray units' ExecStartPre that prunes old session folders (roles/ray_service, issue 16 item 4): the
role's own template rendered by Ansible, then run on a temp dir shaped like Ray's (session_* folders,
session_latest). No machines; ~5 s. The units run it as ExecStartPre (ray.service.j2); the cluster tests do
not check that."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rayops.ansible_env import REPO, run_ansible

TEMPLATE = REPO / "roles/ray_service/templates/ray-prune-sessions.sh.j2"


def _render(tmp_path: Path, temp_dir: Path, keep: int) -> Path:
    script = tmp_path / "prune.sh"
    proc = run_ansible(
        "ansible",
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-m",
        "ansible.builtin.template",
        "-a",
        f"src={TEMPLATE} dest={script} mode=0755",
        "-e",
        f'{{"rayops_ray_temp_dir": "{temp_dir}", "ray_service_sessions_keep": {keep}, "rayops_user": "ray"}}',
        ANSIBLE_INVENTORY_ENABLED="host_list",
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return script


def test_the_newest_sessions_and_the_one_in_use_stay(tmp_path: Path) -> None:
    temp_dir = tmp_path / "ray"
    temp_dir.mkdir()
    now = time.time()
    # The one in use is the OLDEST here (a long-lived cluster), five newer ones from other starts.
    names = [f"session_2026-12-0{i}_00-00-00_000000_{i}" for i in range(1, 7)]
    for age, name in enumerate(reversed(names)):
        (temp_dir / name / "logs").mkdir(parents=True)
        os.utime(temp_dir / name, (now - 60 * age, now - 60 * age))
    current = names[0]  # the oldest mtime
    (temp_dir / "session_latest").symlink_to(temp_dir / current)
    (temp_dir / "ray_current_cluster").write_text("x", encoding="utf-8")
    script = _render(tmp_path, temp_dir, keep=3)
    run = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    left = sorted(p.name for p in temp_dir.iterdir())
    assert left == sorted([current, *names[-3:], "session_latest", "ray_current_cluster"]), left
    assert run.stdout.count("removed old Ray session folder") == 2, run.stdout
    # A second run removes nothing more; a missing temp dir (a node's first start) is no error.
    again = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr
    fresh = _render(tmp_path, tmp_path / "absent", keep=3)
    assert subprocess.run([str(fresh)], capture_output=True, check=False).returncode == 0
