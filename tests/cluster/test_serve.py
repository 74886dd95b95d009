"""serve.yml on the session cluster, after train.yml promoted a model: the API through the real HTTP proxy and
the printed SSH tunnel, bad input, idempotence and check mode, a promotion rolled forward under load with no
failed request. ~5 min on an idle 2-core host (train.yml ~2.5 min of it). The head restart is in
test_serve_heal.py, which runs last.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from cluster_helpers import DASHBOARD_PORT, DATASET, VENV, RayCluster, ServeApi, one_row, recap

from rayops.workflow.features import feature_columns

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]


def test_serve_yml_serves_the_promoted_model_on_every_route(
    served: dict[str, Any], serve_api: ServeApi
) -> None:
    out = served["output"]
    assert f"/zone1: run {served['run_id']}" in out and "equals the predict of that hour" in out
    assert 'curl -s -H "Authorization: Bearer $(cat ' in out and "/serve_token)" in out
    status, info = serve_api.call("/zone1/model")
    assert status == 200 and info["run_id"] == served["run_id"] and info["features"] == feature_columns()
    status, body = serve_api.call("/zone1/predict", {"instances": [one_row(serve_api)] * 3})
    assert status == 200 and len(body["predictions"]) == 3 and body["model"]["run_id"] == served["run_id"]
    assert serve_api.call("/zone1/openapi.json", token="")[0] == 200
    # Serve's own health and routes answer without a token.
    assert serve_api.call("/-/healthz", token="")[0] == 200
    status, routes = serve_api.call("/-/routes", token="")
    assert status == 200 and {"/zone1", "/"} <= set(routes)


def test_replicas_are_spread_over_nodes(ray_cluster: RayCluster, served: dict[str, Any]) -> None:
    out = ray_cluster.ssh(
        ray_cluster.head,
        f"sudo -u ray {VENV}/bin/python -m rayops.serving status "
        f"--dashboard-url http://127.0.0.1:{DASHBOARD_PORT} --token-file /etc/rayops/ray_auth_token",
    )
    assert out.returncode == 0, out.stderr
    nodes = json.loads(out.stdout)["zone1"]["deployments"]["ZoneModel"]["replicas"]
    assert len(nodes) == 2 and len(set(nodes)) == 2, nodes


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "words"),
    [
        ("/zone1/predict", {"raw": b"{not json"}, 400, "not valid JSON"),
        ("/zone1/predict", {"body": {"instances": []}, "token": ""}, 401, "needs Authorization"),
        ("/zone1/predict", {"body": {"instances": []}, "token": "0" * 64}, 401, "wrong"),
        ("/zone1/predict", {"raw": b"a=1", "content_type": "text/plain"}, 415, "must be JSON"),
        ("/zone1/predict", {"body": {"instances": [{"temperature": "hot"}]}}, 422, "is 'hot'"),
        ("/zone1/forecast", {"body": {"readings": [], "weather": []}}, 422, "readings is empty"),
        ("/zone3/predict", {"body": {"instances": []}}, 404, "zone3 is not served"),
    ],
    ids=["not json", "no token", "wrong token", "content type", "a string", "no history", "zone not served"],
)
def test_bad_input_through_the_proxy_is_a_4xx_sentence(
    serve_api: ServeApi, path: str, kwargs: dict[str, Any], status: int, words: str
) -> None:
    got, body = serve_api.call(path, **kwargs)
    assert got == status and isinstance(body, dict) and words in body["error"], (got, body)
    assert serve_api.call("/zone1/predict", {"instances": [one_row(serve_api)]})[0] == 200  # still serving


def test_a_second_serve_yml_changes_nothing_and_check_mode_too(
    ray_cluster: RayCluster, served: dict[str, Any]
) -> None:
    for args in ((), ("--check",)):
        proc = ray_cluster.playbook("serve.yml", *args)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert all(c["changed"] == 0 for c in recap(proc.stdout).values()), (args, recap(proc.stdout))
        assert "Serve: no change" in proc.stdout


def test_serve_yml_refuses_a_run_it_cannot_serve_with_one_sentence(
    ray_cluster: RayCluster, served: dict[str, Any], serve_api: ServeApi
) -> None:
    """A pinned run that does not exist: one sentence, nothing deployed, the promoted model still served.
    (A zone
    without any promoted model is the same code path: tests/serving/test_app.py checks its sentence, since the
    session's other tests promote models in every zone.)"""
    proc = ray_cluster.playbook("serve.yml", "-e", "serve_run_id=no-such-run")
    assert proc.returncode != 0
    assert "zone 1 has no run 'no-such-run'" in " ".join(proc.stdout.split())
    status, info = serve_api.call("/zone1/model")
    assert status == 200 and info["run_id"] == served["run_id"]


@dataclass
class Load:
    """A bounded load loop (4 threads, single-row predicts) through the tunnel, recording every answer."""

    api: ServeApi
    row: dict[str, float]
    statuses: list[int] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    limit: int = 20_000

    def worker(self) -> None:
        while not self.stop.is_set() and len(self.statuses) < self.limit:
            status, body = self.api.call("/zone1/predict", {"instances": [self.row]})
            self.statuses.append(status)
            if status == 200:
                self.runs.append(body["model"]["run_id"])
            else:
                print("load: non-2xx", status, body)
            time.sleep(0.02)


def test_a_promotion_rolls_forward_under_load_with_no_failed_request(
    ray_cluster: RayCluster, serve_api: ServeApi, served: dict[str, Any]
) -> None:
    load = Load(serve_api, one_row(serve_api))
    threads = [threading.Thread(target=load.worker, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        proc = ray_cluster.playbook("train.yml", "-e", f"dataset={DATASET}", "-e", "train_run_id=serve-roll")
        time.sleep(5)
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=60)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "/zone1: run serve-roll" in " ".join(proc.stdout.split())
    failed = [s for s in load.statuses if s != 200]
    print(f"rollout under load: {len(load.statuses)} requests, {len(failed)} not 200")
    assert load.statuses and not failed, failed[:10]
    assert load.runs[0] == served["run_id"] and load.runs[-1] == "serve-roll"
    status, info = serve_api.call("/zone1/model")
    assert status == 200 and info["run_id"] == "serve-roll" and info["last_error"] is None
