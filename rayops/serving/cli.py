"""``python -m rayops.serving``: what serve.yml (and the keeper unit) run on the head.

* ``plan``  resolve each zone's model (promoted pointer, or ``--run-id``), load it once to prove it
  serves, and print the Serve config (JSON) on stdout;
* ``apply`` deploy a config through Serve's REST API if it differs from what runs, wait until every
  app is RUNNING, print ``{"changed": ..., "applications": ...}``; ``--check`` only says what would change;
* ``keep``  forever: re-apply the config whenever Serve lost its apps (a head restart makes a new cluster).

Errors are one sentence on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from rayops.serving.config import Replicas, serve_config
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
    plan.add_argument("--models-bucket", required=True)
    plan.add_argument("--zones", type=_zones, default=[1], help="served zones, e.g. 1,2 (default 1)")
    plan.add_argument(
        "--run-id", default=None, help="serve this promoted run instead of current.json (one zone)"
    )
    plan.add_argument("--token-sha256", required=True, help="SHA-256 of the serve token (hex)")
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
        sp.add_argument("--config", type=Path, required=True)
        sp.add_argument("--dashboard-url", default="http://127.0.0.1:8265")
        sp.add_argument("--token-file", type=Path, default=None, help="the Ray token (token auth)")
        sp.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for RUNNING")
        if name == "apply":
            sp.add_argument("--check", action="store_true", help="only say what would change")
        else:
            sp.add_argument("--interval", type=float, default=5.0)
    return p


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    from rayops.workflow.s3 import S3Store

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
    replicas = Replicas(
        count=args.replicas,
        max_per_node=args.max_replicas_per_node or None,
        num_cpus=args.replica_num_cpus,
        memory_bytes=args.replica_memory or None,
    )
    settings = {"max_rows": args.max_rows, "max_body_bytes": args.max_body_bytes}
    return serve_config(models, args.token_sha256, replicas, settings, host=args.host, port=args.port)


def _api(args: argparse.Namespace) -> ServeApi:
    token = args.token_file.read_text().strip() if args.token_file else None
    return ServeApi(args.dashboard_url, token)


def _apply(args: argparse.Namespace) -> dict[str, Any]:
    config = json.loads(args.config.read_text())
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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parser().parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if args.command == "plan":
            print(json.dumps(_plan(args), indent=2, sort_keys=True))
        elif args.command == "apply":
            print(json.dumps(_apply(args), sort_keys=True))
        else:
            _keep(args)
    except (ModelError, ServeApiError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
