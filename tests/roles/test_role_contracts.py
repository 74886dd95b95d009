"""Static contracts of the roles: specs match defaults, one owner per shared fact, preflight stops bad input.

These need no machines: the preflight play runs against hosts that point back at this controller
(connection local) and is stopped by the tags before any role installs anything.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayops.ansible_env import REPO, run_ansible

# rayops holds only the shared facts (no tasks); the others are the roles site.yml applies.
ROLES = [
    "rayops",
    "firewall",
    "ray_python",
    "ray_node",
    "ray_service",
    "jupyterlab",
    "monitoring",
    "grafana",
    "mlflow",
]
TASK_ROLES = [r for r in ROLES if r != "rayops"]
SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "path": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_document_every_default(role: str) -> None:
    defaults = _yaml(REPO / "roles" / role / "defaults" / "main.yml")
    options = _yaml(REPO / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"][
        "options"
    ]
    assert set(options) == set(defaults), (
        f"{role}: spec and defaults differ in {set(options) ^ set(defaults)}"
    )
    for name, spec in options.items():
        assert name.startswith(f"{role}_"), f"{role}: {name} lacks the role prefix"
        assert spec.get("description"), f"{role}: {name} has no description"
        assert spec.get("default") == defaults[name], f"{role}: {name} default differs from defaults/main.yml"
        if defaults[name] is not None and not str(defaults[name]).startswith("{{"):
            assert isinstance(defaults[name], SPEC_TYPES[spec["type"]]), (
                f"{role}: {name} is not a {spec['type']}"
            )
        if "choices" in spec:
            assert defaults[name] in spec["choices"], f"{role}: {name} default is not one of its choices"


@pytest.mark.parametrize("role", TASK_ROLES)
def test_role_layout_and_tags(role: str) -> None:
    tasks = REPO / "roles" / role / "tasks"
    assert (tasks / "preflight.yml").is_file()
    main = _yaml(tasks / "main.yml")
    included = [t["ansible.builtin.include_tasks"]["file"] for t in main]
    assert included[0] == "preflight.yml", f"{role}: preflight must run first"
    for task in main:
        assert role in task["tags"], f"{role}: task {task['name']} lacks the role tag"
    internal = _yaml(REPO / "roles" / role / "vars" / "main.yml") or {}
    assert all(k.startswith(f"_{role}_") for k in internal), f"{role}: internal vars must be _{role}_*"


def _preflight(tmp_path: Path, *extra: str, host_vars: dict[str, dict[str, Any]] | None = None) -> str:
    """Run site.yml's preflight play against two local 'nodes'; return its output (rc in the text)."""
    hosts: dict[str, Any] = {}
    for name, ip in (("pf-head", "10.9.9.10"), ("pf-worker-1", "10.9.9.11")):
        hosts[name] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ray_node_ip": ip,
            "ray_head_ip": "10.9.9.10",
            "rayops_cluster_name": "pf",
            "rayops_provider": "local",
            "rayops_region": "local",
            "rayops_buckets": {"raw": "a", "features": "b", "models": "c", "results": "d"},
            "s3_endpoint_url": None,
            **(host_vars or {}).get(name, {}),
        }
    inventory = {
        "all": {
            "children": {
                "ray_cluster": {
                    "children": {
                        "ray_head": {"hosts": {"pf-head": hosts["pf-head"]}},
                        "ray_workers": {"hosts": {"pf-worker-1": hosts["pf-worker-1"]}},
                    }
                }
            }
        }
    }
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory), encoding="utf-8")
    facts = REPO / ".rayops" / "facts"
    for name in hosts:  # the jsonfile cache names a host's file <prefix><host>, e.g. s1_pf-head
        for stale in facts.glob(f"*{name}"):
            stale.unlink()
    proc = run_ansible(
        "ansible-playbook",
        "-i",
        str(inv),
        "site.yml",
        "--tags",
        "preflight",
        *extra,
        ANSIBLE_CACHE_PLUGIN="memory",
        ANSIBLE_INVENTORY_ENABLED="yaml",
    )
    # Facts of these fake nodes stay in memory: none reach ansible.cfg's jsonfile cache, where a later
    # run against hosts of the same name would read them.
    leaked = sorted(p.name for name in hosts for p in facts.glob(f"*{name}"))
    assert leaked == [], f"facts leaked into .rayops/facts: {leaked}"
    return f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def test_preflight_accepts_the_defaults(tmp_path: Path) -> None:
    out = _preflight(tmp_path)
    assert out.startswith("rc=0"), out[-3000:]
    assert "Ray python | Create the service user" not in out


@pytest.mark.parametrize(
    ("extra", "sentence"),
    [
        (
            ["-e", "ray_python_version=3.9"],
            "Python 3.9 cannot run Ray 2.60.0 (Ray >= 2.52 needs Python >= 3.10): "
            "set ray_node_profile to 'py39'",
        ),
        (
            ["-e", "ray_python_version=3.10"],
            "Python 3.10 cannot install the default profile's pins, which need Python 3.11 or newer "
            "(pandas 3 and pyarrow 26 ship no older wheels): set ray_python_version to '3.11' or newer, "
            "or ray_node_profile",
        ),
        (
            ["-e", "ray_node_profile=py39", "-e", "rayops_auth_enabled=false"],
            f"Python {sys.version_info[0]}.{sys.version_info[1]} cannot install the py39 profile's pins, "
            "which need Python 3.9 (its lock is resolved for that Python only): "
            "set ray_python_version to '3.9'.",
        ),
        (["-e", "ray_python_version=2.7"], "ray_python_version is '2.7': set it to 'system'"),
        (
            ["-e", "ray_node_install_method=rsync"],
            "use profile 'default' or 'py39' and method 'wheelhouse' or 'index'",
        ),
        (
            [
                "-e",
                '{"ray_node_py39_requirements": ["ray[default]>=2.51"]}',
                "-e",
                "ray_node_profile=py39",
                "-e",
                "ray_python_version=3.9",
            ],
            "Requirements must be exact pins (name==version) including ray: fix ray[default]>=2.51",
        ),
        (
            ["-e", "ray_node_profile=py39", "-e", "ray_python_version=3.9"],
            "Ray 2.51.2 has no token authentication (it came with Ray 2.52): set rayops_auth_enabled=false",
        ),
        (
            ["-e", "ray_node_auth_token=short"],
            "ray_node_auth_token must be empty (rayops generates one) or at least 32",
        ),
        (["-e", "ray_service_dashboard_host=localhost"], "ray_service settings are out of range on pf-head"),
        (
            ["-e", "ray_service_object_store_memory=1024"],
            "ray_service settings are out of range on pf-worker-1",
        ),
        (["-e", "rayops_node_manager_port=70000"], "ray_service settings are out of range"),
        (["-e", "rayops_jupyterlab_port=0"], "JupyterLab settings are invalid"),
    ],
)
def test_preflight_rejects_bad_input_with_one_sentence(
    tmp_path: Path, extra: list[str], sentence: str
) -> None:
    out = _preflight(tmp_path, *extra)
    assert not out.startswith("rc=0"), out[-3000:]
    flat = " ".join(out.split())
    assert sentence in flat, flat[-3000:]


def test_preflight_rejects_version_skew_between_nodes(tmp_path: Path) -> None:
    out = _preflight(
        tmp_path,
        host_vars={"pf-worker-1": {"ray_python_version": "3.9", "ray_node_profile": "py39"}},
    )
    flat = " ".join(out.split())
    assert not out.startswith("rc=0")
    assert "Nodes would end up with different Ray or Python versions" in flat, flat[-3000:]
    assert "pf-worker-1: Python 3.9 Ray 2.51.2" in flat, flat[-3000:]


def test_site_runs_every_preflight_before_changing_anything() -> None:
    plays = _yaml(REPO / "playbooks" / "ray_cluster.yml")
    first = plays[0]
    assert "preflight" in first["tags"] and first["any_errors_fatal"] is True
    assert all("roles" not in p for p in plays[:1]), "the preflight play must not apply roles"
    loop = first["tasks"][0]["loop"]
    for role in TASK_ROLES:
        assert role in loop, f"site.yml's preflight play skips {role}"


def _role_and_playbook_files() -> list[Path]:
    files = [p for p in (REPO / "roles").rglob("*") if p.is_file() and p.suffix in {".yml", ".j2"}]
    files += [REPO / "site.yml", REPO / "train.yml", *(REPO / "playbooks").rglob("*.yml")]
    return files


def test_every_shared_fact_has_one_owner() -> None:
    """The rayops role defines each rayops_* fact once; no role redefines it or re-reads it with a default."""
    owned = set(_yaml(REPO / "roles" / "rayops" / "defaults" / "main.yml"))
    redefined = []
    for role in TASK_ROLES:
        for part in ("defaults", "vars"):
            names = set(_yaml(REPO / "roles" / role / part / "main.yml") or {})
            redefined += [f"roles/{role}/{part}: {n}" for n in sorted(names & owned)]
    assert redefined == [], redefined
    pattern = re.compile(r"\b(" + "|".join(sorted(owned)) + r")\s*\|\s*default\(")
    rereads = [
        f"{p.relative_to(REPO)}:{n}: {line.strip()}"
        for p in _role_and_playbook_files()
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert rereads == [], rereads


def test_roles_know_no_provider_and_no_repo_layout() -> None:
    """Provider quirks live in the stack outputs; the repo root is found in one place (rayops_project_dir)."""
    offenders = []
    for p in _role_and_playbook_files():
        text = p.read_text(encoding="utf-8")
        if "rayops_provider ==" in text or "_local_" in text:
            offenders.append(f"{p.relative_to(REPO)}: branches on the provider")
        if "role_path | dirname" in text and "roles/rayops/" not in str(p):
            offenders.append(f"{p.relative_to(REPO)}: finds the repo from its own role_path")
        for hard in ("/opt/rayops", "/etc/rayops", ":8265", "8265/"):
            if hard in text and "roles/rayops/" not in str(p):
                offenders.append(f"{p.relative_to(REPO)}: hard-codes {hard}")
    assert offenders == [], offenders


def _tasks(node: Any) -> Any:
    """Every task dict in a play or task file, blocks' own tasks included."""
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        if "hosts" in node:  # a play
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                yield from _tasks(node.get(section) or [])
            return
        yield node
        for section in ("block", "rescue", "always"):
            yield from _tasks(node.get(section) or [])


def test_every_ray_job_task_runs_as_the_ray_user_with_the_root_owned_venv() -> None:
    """Issue 15: root ran the ray_job module with the venv's Python, so whatever a job planted in that venv
    ran as root at the next train.yml. Every ray_job task (in any playbook or role) runs as rayops_user,
    with the venv's Python (root-owned, read-only for that user: tests/cluster/test_node_security.py)."""
    files = [*REPO.glob("*.yml"), *REPO.glob("playbooks/**/*.yml"), *REPO.glob("roles/*/tasks/*.yml")]
    found = []
    for path in files:
        for task in _tasks(_yaml(path)):
            if any(key == "ray_job" or key.endswith(".ray_job") for key in task):
                found.append((path.relative_to(REPO), task.get("name")))
                assert task.get("become") is True, (path, task.get("name"))
                assert task.get("become_user") == "{{ rayops_user }}", (path, task.get("name"))
                interpreter = (task.get("vars") or {}).get("ansible_python_interpreter", "")
                assert interpreter.endswith("/bin/python") and "venv" in interpreter, (path, task.get("name"))
    assert found, "no ray_job task found: the search is broken"
    assert _yaml(REPO / "roles" / "rayops" / "defaults" / "main.yml")["rayops_user"] == "ray"
