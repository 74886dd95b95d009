"""The monitoring role's files as Ansible renders them, checked by promtool (no machines, no Prometheus).

promtool comes from Debian's prometheus package, unpacked by `make setup` into .rayops/cache/prometheus.
The alert rules' unit tests live beside the template (roles/monitoring/tests/rayops_alerts_test.yml); each
alert is run on its own here, and each must have a case where it fires and one where it does not.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayops.ansible_env import REPO, run_ansible

PROMTOOL = REPO / ".rayops" / "cache" / "prometheus" / "usr" / "bin" / "promtool"
ROLE = REPO / "roles" / "monitoring"
UNIT_TESTS = ROLE / "tests" / "rayops_alerts_test.yml"
DASHBOARD = REPO / "roles" / "grafana" / "files" / "dashboards" / "rayops_model.json"
NODES = {"c-head": "10.9.8.10", "c-worker-1": "10.9.8.11", "c-worker-2": "10.9.8.12"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.is_file():
        pytest.fail(
            f"{PROMTOOL} is missing: run `make setup` (it unpacks promtool from Debian's prometheus package)"
        )
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=60, check=False)


def _render(out: Path, *extra: str) -> None:
    """Render the rules and Prometheus's and Alertmanager's configuration with the defaults into ``out``."""
    hosts = {
        name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ray_node_ip": ip}
        for name, ip in NODES.items()
    }
    inventory = {
        "all": {
            "vars": {"rayops_cluster_name": "c"},
            "children": {
                "ray_cluster": {
                    "children": {
                        "ray_head": {"hosts": {"c-head": hosts["c-head"]}},
                        "ray_workers": {"hosts": {n: hosts[n] for n in NODES if n != "c-head"}},
                    }
                }
            },
        }
    }
    (out / "inventory.yml").write_text(yaml.safe_dump(inventory), encoding="utf-8")
    play = [
        {
            "hosts": "c-head",
            "gather_facts": False,
            "vars_files": [
                str(REPO / "roles" / "rayops" / "defaults" / "main.yml"),
                str(ROLE / "defaults" / "main.yml"),
                str(ROLE / "vars" / "main.yml"),
            ],
            "tasks": [
                {
                    "name": f"Render {src}",
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates" / src),
                        "dest": str(out / dest),
                        "mode": "0644",
                    },
                }
                for src, dest in (
                    ("rayops_alerts.yml.j2", "rayops_alerts.yml"),
                    ("prometheus.yml.j2", "prometheus.yml"),
                    ("alertmanager.yml.j2", "alertmanager.yml"),
                )
            ],
        }
    ]
    (out / "render.yml").write_text(yaml.safe_dump(play), encoding="utf-8")
    proc = run_ansible(
        "ansible-playbook",
        "-i",
        str(out / "inventory.yml"),
        str(out / "render.yml"),
        *extra,
        ANSIBLE_CACHE_PLUGIN="memory",
        ANSIBLE_INVENTORY_ENABLED="yaml",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("monitoring")
    _render(out)
    return out


def _alerts(rules_file: Path) -> list[dict[str, Any]]:
    groups = yaml.safe_load(rules_file.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_pass_promtool_check(rendered: Path) -> None:
    proc = _promtool("check", "rules", str(rendered / "rayops_alerts.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {rule["alert"] for rule in _alerts(rendered / "rayops_alerts.yml")}
    assert names == {
        "RayNodeDown",
        "MachineDown",
        "RayGcsDown",
        "NodeDiskNearlyFull",
        "NodeMemoryNearlyFull",
        "TrainingJobFailed",
        "ServeHigh5xxRatio",
        "ServeHighP99Latency",
        "ModelDrift",
        "ModelLiveMaeHigh",
        "ModelLiveRmseHigh",
    }


def _unit_tests_of(alert: str) -> dict[str, Any]:
    """The unit-test file with only ``alert``'s cases (groups without one dropped)."""
    spec = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))
    groups = []
    for group in spec["tests"]:
        cases = [c for c in group.get("alert_rule_test", []) if c["alertname"] == alert]
        if cases:
            groups.append({**group, "alert_rule_test": cases})
    return {**spec, "tests": groups}


ALERTS = [
    "RayNodeDown",
    "MachineDown",
    "RayGcsDown",
    "NodeDiskNearlyFull",
    "NodeMemoryNearlyFull",
    "TrainingJobFailed",
    "ServeHigh5xxRatio",
    "ServeHighP99Latency",
    "ModelDrift",
    "ModelLiveMaeHigh",
    "ModelLiveRmseHigh",
]


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_fires_and_stays_quiet_as_its_unit_tests_say(rendered: Path, alert: str) -> None:
    spec = _unit_tests_of(alert)
    cases = [c for g in spec["tests"] for c in g["alert_rule_test"]]
    assert any(c["exp_alerts"] for c in cases), f"{alert}: no unit test where it fires"
    assert any(not c["exp_alerts"] for c in cases), f"{alert}: no unit test where it stays quiet"
    path = rendered / f"{alert}_test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    proc = _promtool("test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_thresholds_come_from_the_role_variables(tmp_path: Path) -> None:
    """A changed threshold changes the rule: the drift case at PSI 0.4 no longer fires above 0.5."""
    _render(tmp_path, "-e", "monitoring_alert_drift_psi=0.5", "-e", "monitoring_alert_node_down_for=3m")
    alerts = {r["alert"]: r for r in _alerts(tmp_path / "rayops_alerts.yml")}
    assert alerts["ModelDrift"]["expr"].rstrip().endswith("> 0.5")
    assert alerts["RayNodeDown"]["for"] == "3m"
    spec = _unit_tests_of("ModelDrift")
    (tmp_path / "drift_test.yml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    proc = _promtool("test", "rules", str(tmp_path / "drift_test.yml"))
    assert proc.returncode != 0 and "ModelDrift" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_prometheus_config_passes_promtool_and_scrapes_the_inventory(rendered: Path) -> None:
    # The config names the rules by their path on the head: check it with the rendered rules in their place.
    config = (rendered / "prometheus.yml").read_text(encoding="utf-8")
    local = rendered / "local.yml"
    local.write_text(config.replace("/etc/prometheus/rules/*.yml", str(rendered / "rayops_alerts.yml")))
    proc = _promtool("check", "config", str(local))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 11 rules found" in proc.stdout, proc.stdout
    jobs = {job["job_name"]: job for job in yaml.safe_load(config)["scrape_configs"]}
    assert set(jobs) == {"ray", "node", "prometheus", "alertmanager"}

    def targets(job: str) -> dict[str, str]:
        return {t: sc["labels"]["node"] for sc in jobs[job]["static_configs"] for t in sc["targets"]}

    ray = {f"{ip}:8080": name for name, ip in NODES.items()}
    ray |= {"10.9.8.10:44217": "c-head", "10.9.8.10:44227": "c-head"}
    assert targets("ray") == ray
    assert targets("node") == {f"{ip}:9100": name for name, ip in NODES.items()}
    assert [t for sc in jobs["prometheus"]["static_configs"] for t in sc["targets"]] == ["127.0.0.1:9090"]
    assert [t for sc in jobs["alertmanager"]["static_configs"] for t in sc["targets"]] == ["127.0.0.1:9093"]


def test_alertmanager_has_no_receiver_by_default_and_takes_yours(rendered: Path, tmp_path: Path) -> None:
    default = yaml.safe_load((rendered / "alertmanager.yml").read_text(encoding="utf-8"))
    assert default["route"]["receiver"] == "none"
    assert default["receivers"] == [{"name": "none"}]
    hook = {"name": "ops", "webhook_configs": [{"url": "http://127.0.0.1:9999/hook"}]}
    _render(tmp_path, "-e", json.dumps({"monitoring_alertmanager_receivers": [hook]}), "-e",
            "monitoring_alertmanager_receiver=ops")  # fmt: skip
    mine = yaml.safe_load((tmp_path / "alertmanager.yml").read_text(encoding="utf-8"))
    assert mine["route"]["receiver"] == "ops" and mine["receivers"] == [hook]


def _jobs_exporter() -> Any:
    spec = importlib.util.spec_from_file_location(
        "ray_jobs_textfile", ROLE / "files" / "ray_jobs_textfile.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_jobs_exporter_says_whether_the_latest_training_job_failed() -> None:
    render = _jobs_exporter().render
    jobs = [
        {"submission_id": "rayops-train-a", "status": "FAILED", "end_time": 100},
        {"submission_id": "rayops-train-b", "status": "SUCCEEDED", "end_time": 200},
        {"submission_id": "rayops-train-c", "status": "RUNNING", "end_time": None},
        {"submission_id": "raysubmit_1", "status": "FAILED", "end_time": 300},
    ]
    text = render(jobs)
    assert 'rayops_ray_job_last_failed{kind="train",submission_id="rayops-train-b"} 0' in text
    assert 'rayops_ray_job_last_failed{kind="other",submission_id="raysubmit_1"} 1' in text
    assert 'rayops_ray_jobs{kind="train",status="FAILED"} 1' in text
    assert 'rayops_ray_jobs{kind="train",status="RUNNING"} 1' in text
    assert "rayops_ray_jobs_query_success 1" in text
    later = render([*jobs, {"submission_id": "rayops-train-d", "status": "FAILED", "end_time": 400}])
    assert 'rayops_ray_job_last_failed{kind="train",submission_id="rayops-train-d"} 1' in later
    assert render(None).splitlines()[-1] == "rayops_ray_jobs_query_success 0"
    assert "rayops_ray_job_last_failed{" not in render([])


def _exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    def panels(items: list[dict[str, Any]]) -> Any:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    return [
        (p["title"], t["expr"])
        for p in panels(dashboard["panels"])
        for t in p.get("targets", [])
        if t.get("expr")
    ]


def grafana_to_promql(expr: str) -> str:
    """A panel query as Grafana sends it with every variable at 'All' ($__rate_interval as 5m, $X as .*)."""
    expr = re.sub(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def test_rayops_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = _exprs(dashboard)
    assert len(exprs) >= 10
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"panel:{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(exprs)
    ]}]}  # fmt: skip
    (tmp_path / "dash.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    proc = _promtool("check", "rules", str(tmp_path / "dash.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
