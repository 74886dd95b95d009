"""``python -m rayops.serving``: what serve.yml (and the keeper unit) run on the head.

* ``plan``  resolve each zone's model (promoted pointer, or ``--run-id``), load it once to prove it
  serves, and print the Serve config (JSON) on stdout;
* ``apply`` deploy a config through Serve's REST API if it differs from what runs, wait until every
  app is RUNNING, print ``{"changed": ..., "applications": ...}``; ``--check`` only says what would change;
* ``keep``  forever: re-apply the config whenever Serve lost its apps (a head restart makes a new cluster);
* ``smoke`` call every route of every served zone once through the HTTP proxy (the serve token in
  ``RAYOPS_SERVE_TOKEN``): the forecast of the data's last hour must equal the predict of its row.

Errors are one sentence on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rayops.serving.config import INDEX_APP, Replicas, serve_config
from rayops.serving.model import ZONES, ModelError, load, resolve
from rayops.serving.rest import ServeApi, ServeApiError, difference, statuses, wait_running

log = logging.getLogger("rayops.serving")


def _zones(text: str) -> list[int]:
    try:
        zones = sorted({int(z) for z in text.replace(" ", "").split(",") if z})
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"zones must be numbers like 1,2 (got {text!r})") from err
    bad = [z for z in zones if z not in ZONES]
    if bad or not zones:
        raise argparse.ArgumentTypeError(f"zones must be among 1, 2, 3 (got {text!r})")
    return zones


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rayops.serving", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="resolve and check the models, print the Serve config")
    plan.add_argument(
        "--like", type=Path, default=None, help="keep this deployed config, re-resolve its models"
    )
    plan.add_argument("--models-bucket", required=True)
    plan.add_argument("--zones", type=_zones, default=[1], help="served zones, e.g. 1,2 (default 1)")
    plan.add_argument(
        "--run-id", default=None, help="serve this promoted run instead of current.json (one zone)"
    )
    plan.add_argument("--token-sha256", default="", help="SHA-256 of the serve token (hex)")
    plan.add_argument("--replicas", type=int, default=2)
    plan.add_argument("--max-replicas-per-node", type=int, default=1, help="0: no limit")
    plan.add_argument("--replica-num-cpus", type=float, default=0.0)
    plan.add_argument("--replica-memory", type=int, default=0, help="bytes reserved per replica (0: none)")
    plan.add_argument("--max-rows", type=int, default=1000)
    plan.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024)
    plan.add_argument("--host", default="127.0.0.1")
    plan.add_argument("--port", type=int, default=8000)
    for name, help_text in (
        ("apply", "deploy the config if it differs"),
        ("keep", "re-apply it when Serve lost it"),
    ):
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("--config", type=Path, required=True, help="the config file (apply: - reads stdin)")
        sp.add_argument("--dashboard-url", default="http://127.0.0.1:8265")
        sp.add_argument("--token-file", type=Path, default=None, help="the Ray token (token auth)")
        sp.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for RUNNING")
        if name == "apply":
            sp.add_argument("--check", action="store_true", help="only say what would change")
        else:
            sp.add_argument("--interval", type=float, default=5.0)
    status = sub.add_parser("status", help="every app's status and where its replicas run (JSON)")
    status.add_argument("--dashboard-url", default="http://127.0.0.1:8265")
    status.add_argument("--token-file", type=Path, default=None)
    remove = sub.add_parser("remove", help="remove every Serve app (Serve shuts down)")
    remove.add_argument("--dashboard-url", default="http://127.0.0.1:8265")
    remove.add_argument("--token-file", type=Path, default=None)
    remove.add_argument("--check", action="store_true")
    smoke = sub.add_parser("smoke", help="call every route once through the proxy")
    smoke.add_argument("--config", type=Path, required=True)
    smoke.add_argument(
        "--zones", type=_zones, default=None, help="only these zones (default: every served one)"
    )
    return p


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    from rayops.workflow.s3 import S3Store

    if args.like is not None:
        if args.run_id is not None:
            raise ModelError("--like rolls the deployed zones to their promoted models: drop --run-id")
        like = read_deployed(args.like)
        args.zones, args.token_sha256 = like["zones"], like["token_sha256"]
        replicas, settings = like["replicas"], like["settings"]
        host, port = like["host"], like["port"]
    else:
        replicas = Replicas(
            count=args.replicas,
            max_per_node=args.max_replicas_per_node or None,
            num_cpus=args.replica_num_cpus,
            memory_bytes=args.replica_memory or None,
        )
        settings = {"max_rows": args.max_rows, "max_body_bytes": args.max_body_bytes}
        host, port = args.host, args.port
    if len(args.token_sha256) != 64:
        raise ModelError("--token-sha256 must be the 64 hex digits of the serve token's SHA-256")
    if args.run_id is not None and len(args.zones) != 1:
        raise ModelError(f"serve_run_id pins one zone's run, but the zones are {args.zones}: serve one zone")
    store = S3Store()
    models = {}
    for zone in args.zones:
        source = resolve(store, args.models_bucket, zone, args.run_id)
        model = load(store, source)  # the replicas will load exactly this: prove it loads and predicts
        log.info("serve: zone %s -> run %s (%s features)", zone, source.run_id, len(model.features))
        models[zone] = source
    return serve_config(models, args.token_sha256, replicas, settings, host=host, port=port)


def read_deployed(path: Path) -> dict[str, Any]:
    """What a config serve.yml wrote says about itself: zones, token digest, replicas, settings, HTTP."""
    config = json.loads(path.read_text())
    zones, digest, replicas, settings = [], "", Replicas(), {}
    for app in config["applications"]:
        if app["name"] == INDEX_APP:
            continue
        zones.append(int(app["args"]["zone"]))
        settings = {k: v for k, v in app["args"].items() if k != "zone"}
        deployment = app["deployments"][0]
        digest = deployment["user_config"]["token_sha256"]
        actor = deployment.get("ray_actor_options", {})
        replicas = Replicas(
            count=deployment["num_replicas"],
            max_per_node=deployment.get("max_replicas_per_node"),
            num_cpus=actor.get("num_cpus", 0.0),
            memory_bytes=actor.get("memory"),
            max_ongoing_requests=deployment.get("max_ongoing_requests", 64),
        )
    http = config.get("http_options", {})
    return {
        "zones": zones,
        "token_sha256": digest,
        "replicas": replicas,
        "settings": settings,
        "host": http.get("host", "127.0.0.1"),
        "port": int(http.get("port", 8000)),
        "models": {
            int(a["args"]["zone"]): a["deployments"][0]["user_config"]["model"]
            for a in config["applications"]
            if a["name"] != INDEX_APP
        },
    }


def _api(args: argparse.Namespace) -> ServeApi:
    token = args.token_file.read_text().strip() if args.token_file else None
    return ServeApi(args.dashboard_url, token)


def _apply(args: argparse.Namespace) -> dict[str, Any]:
    config = json.loads(sys.stdin.read() if str(args.config) == "-" else args.config.read_text())
    api = _api(args)
    diff = difference(config, api.details())
    result: dict[str, Any] = {"changed": bool(diff), "difference": diff.sentence()}
    if args.check:
        return result
    if diff:
        log.info("serve: deploying (%s)", diff.sentence())
        api.put(config)
    details = wait_running(api, [a["name"] for a in config["applications"]], args.timeout, log.info)
    result["applications"] = statuses(details)
    return result


def _keep(args: argparse.Namespace) -> None:
    """Re-apply only what Serve lost (apps missing); a changed config is serve.yml's to deploy."""
    api = _api(args)
    while True:
        try:
            if args.config.exists():
                config = json.loads(args.config.read_text())
                diff = difference(config, api.details())
                if diff.missing:
                    log.warning("serve: Serve lost %s; re-applying %s", ", ".join(diff.missing), args.config)
                    api.put(config)
                    wait_running(api, [a["name"] for a in config["applications"]], args.timeout, log.info)
                    log.warning(
                        "serve: %s running again", ", ".join(a["name"] for a in config["applications"])
                    )
        except (ServeApiError, OSError, ValueError) as err:
            log.info("serve: %s; retrying in %.0f s", err, args.interval)
        time.sleep(args.interval)


def placement(details: dict[str, Any]) -> dict[str, Any]:
    """{app: {"status", "deployments": {name: {"status", "replicas": [node IP, ...]}}}} of Serve's details."""
    return {
        name: {
            "status": app.get("status"),
            "deployments": {
                dname: {
                    "status": dep.get("status"),
                    "replicas": sorted(r.get("node_ip", "") for r in dep.get("replicas", [])),
                }
                for dname, dep in (app.get("deployments") or {}).items()
            },
        }
        for name, app in (details.get("applications") or {}).items()
    }


def _call(url: str, token: str, body: Any = None) -> tuple[int, Any, float]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")  # noqa: S310
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (http://127.0.0.1 only)
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode(errors="replace")
    elapsed = (time.perf_counter() - start) * 1000
    try:
        return status, json.loads(text), elapsed
    except ValueError:
        return status, text, elapsed


def _smoke(args: argparse.Namespace) -> dict[str, Any]:
    """Every route once per zone; the last hour of the model's own raw data is forecast and predicted."""
    import pandas as pd

    from rayops.serving.forecast import build_row
    from rayops.serving.model import ModelSource, get_object
    from rayops.workflow.features import LAGS, feature_columns
    from rayops.workflow.ingest import WEATHER, Fetched, display_name, parse
    from rayops.workflow.s3 import S3Store

    token = os.environ.get("RAYOPS_SERVE_TOKEN", "").strip()
    if not token:
        raise ModelError("RAYOPS_SERVE_TOKEN is not set: pass the serve token in it")
    deployed = read_deployed(args.config)
    base = f"http://127.0.0.1:{deployed['port']}"
    store = S3Store()
    report: dict[str, Any] = {}
    for zone in args.zones or deployed["zones"]:
        source = ModelSource.from_dict(deployed["models"][zone])
        prefix = f"{base}/zone{zone}"
        status, info, ms = _call(f"{prefix}/model", token)
        if status != 200:
            raise ServeApiError(f"GET {prefix}/model answered {status}: {info}")
        if info.get("run_id") != source.run_id or info.get("last_error"):
            raise ServeApiError(
                f"zone {zone} serves run {info.get('run_id')!r}, not {source.run_id!r}"
                + (f" ({info['last_error']})" if info.get("last_error") else "")
            )
        routes = {"model": round(ms, 1)}
        metadata = json.loads(get_object(store, source.metadata_uri, source.metadata_version_id)[0])
        data = metadata["data"]
        csv, _ = get_object(store, data["raw_uri"], data.get("version_id"))
        raw = parse(Fetched(name="raw", data=csv, source=data["raw_uri"]), target_zone=zone).frame
        hour = raw["datetime"].iloc[-1].floor("h") - pd.Timedelta(hours=1)  # the last complete hour
        start = hour - pd.Timedelta(hours=max(LAGS))
        columns = ["datetime", *WEATHER]
        readings = raw[(raw["datetime"] >= start) & (raw["datetime"] < hour)][[*columns, f"zone{zone}"]]
        weather = raw[(raw["datetime"] >= hour) & (raw["datetime"] < hour + pd.Timedelta(hours=1))][columns]

        def named(frame: pd.DataFrame) -> list[dict[str, Any]]:
            out = frame.assign(datetime=frame["datetime"].dt.strftime("%Y-%m-%d %H:%M:%S"))
            return [{display_name(k): v for k, v in r.items()} for r in out.to_dict("records")]

        body = {"readings": named(readings), "weather": named(weather)}
        status, forecast, ms = _call(f"{prefix}/forecast", token, body)
        if status != 200:
            raise ServeApiError(f"POST {prefix}/forecast answered {status}: {forecast}")
        routes["forecast"] = round(ms, 1)
        row = build_row(body["readings"], body["weather"], zone).row
        instance = dict(zip(feature_columns(), map(float, row), strict=True))
        status, predicted, ms = _call(f"{prefix}/predict", token, {"instances": [instance]})
        if status != 200:
            raise ServeApiError(f"POST {prefix}/predict answered {status}: {predicted}")
        routes["predict"] = round(ms, 1)
        if abs(predicted["predictions"][0] - forecast["prediction"]) > 1e-6 * abs(forecast["prediction"]):
            raise ServeApiError(
                f"zone {zone}: forecast {forecast['prediction']} and predict {predicted['predictions'][0]} "
                f"of the same hour differ"
            )
        report[f"zone{zone}"] = {
            "run_id": source.run_id,
            "hour": forecast["timestamp"],
            "prediction": round(forecast["prediction"], 3),
            "ms": routes,
        }
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parser().parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if args.command == "plan":
            print(json.dumps(_plan(args), indent=2, sort_keys=True))
        elif args.command == "apply":
            print(json.dumps(_apply(args), sort_keys=True))
        elif args.command == "status":
            print(json.dumps(placement(_api(args).details()), sort_keys=True))
        elif args.command == "remove":
            api = _api(args)
            present = bool(api.details().get("applications"))
            if present and not args.check:
                api.delete()
            print(json.dumps({"changed": present}))
        elif args.command == "smoke":
            print(json.dumps(_smoke(args), sort_keys=True))
        else:
            _keep(args)
    except (ModelError, ServeApiError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
