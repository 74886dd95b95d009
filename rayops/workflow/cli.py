"""Command line: ``python -m rayops.workflow run ...`` and ``python -m rayops.workflow resolve-dataset``.

``run`` prints one ``[rayops] ...`` progress line per step and, at the end, exactly one line
``RAYOPS_METRICS_JSON=<compact json>`` (also when the model is not promoted) for the playbook to
parse from the Ray job's logs. Exit codes: 0 promoted, 1 failure, 2 bad input or option,
3 trained but not promoted (the current model stays in place).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rayops.workflow.config import (
    FEATURE_EXECUTORS,
    OPTIONS,
    UCI_URL,
    Buckets,
    Option,
    WorkflowConfig,
    config_from_options,
    default_of,
    new_run_id,
    option_defaults,
    parse_option_value,
)
from rayops.workflow.errors import ConfigError, NotPromotedError, WorkflowError

METRICS_PREFIX = "RAYOPS_METRICS_JSON="
log = logging.getLogger("rayops.workflow")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]  # the stream type is not needed here
    """Our progress handler (replaced, not duplicated, when main() runs again in one process)."""


def _setup_logging(stream: Any) -> None:
    logger = logging.getLogger("rayops")
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
    handler = _Handler(stream)
    handler.setFormatter(logging.Formatter("[rayops] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one ``[rayops] error:`` sentence (exit 2), not the usage text."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument (--[a-z-]+): (?=\1 )", "", message)  # our sentence names it already
        print(f"[rayops] error: {message}: see {self.prog} --help", file=sys.stderr, flush=True)
        raise SystemExit(2)


def _typed(option: Option) -> Callable[[str], Any]:
    """The option's parser for argparse (the one train.yml's check uses, see parse_option_value)."""

    def convert(text: str) -> Any:
        try:
            return parse_option_value(option, text)
        except ConfigError as err:
            if option.kind == "workers":
                raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor a whole number") from None
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def _shown(option: Option) -> str:
    """An option's default as the command line spells it."""
    if option.default is None:
        return "auto" if option.kind == "workers" else "none"
    return str(option.default)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m rayops.workflow",
        description="The rayops ML workflow: raw data -> features -> XGBoost on Ray -> promoted model.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run the whole workflow (ingest, features, train, evaluate, artifacts)",
        description="Run the workflow on the connected Ray cluster (RAY_ADDRESS / --ray-address), "
        "or on a local Ray started for the run.",
    )
    run.add_argument(
        "--dataset",
        default=default_of(WorkflowConfig, "dataset"),
        help="path, s3:// URI or https:// URL (default: the UCI zip)",
    )
    run.add_argument(
        "--buckets",
        required=True,
        help='JSON object {"raw": ..., "features": ..., "models": ..., "results": ...} (stack outputs)',
    )
    run.add_argument(
        "--s3-endpoint-url", default=None, help="S3 endpoint of the local cloud; leave out on AWS"
    )
    run.add_argument(
        "--target-zone",
        type=int,
        default=default_of(WorkflowConfig, "target_zone"),
        help="zone to predict: 1, 2 or 3 (default: %(default)s)",
    )
    run.add_argument(
        "--run-id", default=None, help="run id used in every S3 key (default: UTC time + random)"
    )
    run.add_argument(
        "--features-executor",
        choices=FEATURE_EXECUTORS,
        default=default_of(WorkflowConfig, "features_executor"),
        help="who runs the feature steps: 'auto' (default: pandas on the driver for small tables), "
        "'pandas' or 'ray' (Ray Data on the cluster)",
    )
    for option in OPTIONS:
        run.add_argument(
            option.flag,
            type=_typed(option),
            default=option.default,
            help=f"{option.help} (default: {_shown(option)})",
        )
    run.add_argument(
        "--git-sha", default=None, help="commit of the code, recorded in the model metadata ('unknown': none)"
    )
    run.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking server to log the run to (train.yml passes the head's); default: not tracked",
    )
    run.add_argument(
        "--claim-token",
        default=None,
        help="id of this submission's train.yml: a resubmission of a job lost with the head passes the same "
        "one and continues the run (resumes Ray Train from its last checkpoint); default: none",
    )
    run.add_argument("--output-metrics", type=Path, default=None, help="also write metrics.json to this path")
    run.add_argument("--ray-address", default=None, help="Ray cluster to use (default: RAY_ADDRESS or local)")
    run.add_argument("--local-cpus", type=int, default=None, help="CPUs of a locally started Ray")

    options = sub.add_parser(
        "options",
        help="list the options a run may tune, with their defaults (train.yml's train_params keys)",
    )
    options.add_argument("--json", action="store_true", help="one JSON object {name: default}")

    check = sub.add_parser(
        "check",
        help="check train.yml's train_params (JSON) and dataset by a run's rules, before anything runs",
    )
    check.add_argument("--params", default="{}", help="JSON object of option names and values")
    check.add_argument("--dataset", default=default_of(WorkflowConfig, "dataset"))

    resolve = sub.add_parser(
        "resolve-dataset",
        help="print where the dataset is: $DATASET, else the cache in data/, else a verified download",
    )
    resolve.add_argument("--dataset", default=os.environ.get("DATASET") or None, help="default: $DATASET")
    resolve.add_argument("--cache-dir", type=Path, default=Path("data"), help="cache folder (default data/)")
    resolve.add_argument("--url", default=UCI_URL, help="where to download the dataset from")
    resolve.add_argument(
        "--upload-to", default=None, help="also upload the file to this s3:// URI and print that URI instead"
    )
    resolve.add_argument("--s3-endpoint-url", default=None)
    return parser


def config_from_args(args: argparse.Namespace) -> WorkflowConfig:
    return config_from_options(
        {option.name: getattr(args, option.name) for option in OPTIONS},
        buckets=Buckets.from_json(args.buckets),
        dataset=args.dataset,
        s3_endpoint_url=args.s3_endpoint_url,
        target_zone=args.target_zone,
        run_id=args.run_id or new_run_id(),
        features_executor=args.features_executor,
        tracking_uri=args.tracking_uri or None,
        claim_token=args.claim_token or None,
        # "unknown" is what a playbook passes when the controller's copy is not a git checkout.
        git_sha=None if (args.git_sha or "").strip().lower() in ("", "unknown") else args.git_sha.strip(),
    )


def _connect_ray(address: str | None, local_cpus: int | None) -> bool:
    """Connect to the cluster (job / --ray-address) or start a local Ray; True if we started one."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            log.info("ray: connecting to %s", address)
            ray.init(address=address, log_to_driver=True)
        else:
            log.info("ray: no RAY_ADDRESS, starting a local Ray for this run")
            ray.init(address="local", num_cpus=local_cpus, include_dashboard=False)
    except Exception as err:
        raise WorkflowError(
            f"cannot connect to the Ray cluster at {address or 'a new local instance'} "
            f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}): "
            "start the cluster, or unset RAY_ADDRESS to run on a local Ray"
        ) from err
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    return True


def _emit(metrics: dict[str, Any], output: Path | None) -> None:
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        log.info("metrics written to %s", output)
    print(METRICS_PREFIX + json.dumps(metrics, separators=(",", ":"), sort_keys=True), flush=True)


def _fail(err: WorkflowError) -> int:
    print(f"[rayops] error: {err}", file=sys.stderr, flush=True)
    return err.exit_code


def cmd_run(args: argparse.Namespace) -> int:
    from rayops.workflow import pipeline

    try:
        config = config_from_args(args)
    except ConfigError as err:
        return _fail(err)
    started_ray = False

    def connect() -> None:
        nonlocal started_ray
        started_ray = _connect_ray(args.ray_address, args.local_cpus)

    try:
        metrics = pipeline.run(config, connect=connect)
    except NotPromotedError as err:
        _emit(err.metrics, args.output_metrics)
        return _fail(err)
    except WorkflowError as err:
        return _fail(err)
    except Exception as err:  # a bug or an infrastructure failure: keep the traceback, end with one line
        traceback.print_exc()
        text = str(err).strip()
        return _fail(
            WorkflowError(
                f"the workflow failed unexpectedly ({type(err).__name__}: "
                f"{text.splitlines()[0] if text else 'no message'}): see the traceback above"
            )
        )
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    _emit(metrics, args.output_metrics)
    log.info("run %s: promoted %s", metrics["run_id"], metrics["model_uri"])
    return 0


def cmd_options(args: argparse.Namespace) -> int:
    """The tunable options and their defaults, for train.yml's check of train_params."""
    if args.json:
        print(json.dumps(option_defaults()), flush=True)
        return 0
    for option in OPTIONS:
        print(f"{option.flag:<20} {_shown(option):<8} {option.help}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """One sentence and exit 2 for the first bad value of ``--params`` (train.yml's train_params)."""
    try:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as err:
            raise ConfigError(f"train_params is not JSON ({err.msg}): pass a mapping of options") from err
        if not isinstance(params, dict):
            raise ConfigError(
                f"train_params is {params!r}: pass a mapping of options such as {{max_depth: 6}}"
            )
        known = {option.name: option for option in OPTIONS}
        values = {
            name: parse_option_value(known[name], value, f"train_params.{name}") if name in known else value
            for name, value in params.items()
        }
        placeholder = Buckets("check-raw", "check-features", "check-models", "check-results")
        config_from_options(values, buckets=placeholder, dataset=args.dataset)
    except ConfigError as err:
        return _fail(err)
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from rayops.workflow import ingest
    from rayops.workflow.s3 import S3Store, split_s3_uri

    try:
        location = ingest.resolve_dataset(args.dataset, args.cache_dir, url=args.url)
        if args.upload_to:
            bucket, key = split_s3_uri(args.upload_to)
            fetched = ingest.fetch(location, S3Store(args.s3_endpoint_url))
            put = S3Store(args.s3_endpoint_url).put_bytes(bucket, key, fetched.data, content_type="text/csv")
            log.info("dataset: uploaded to %s (version %s)", put.uri, put.version_id)
            location = put.uri
    except WorkflowError as err:
        return _fail(err)
    print(location, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Progress goes to stdout for `run` (the job log); to stderr for resolve-dataset, whose
    # stdout is the answer a Makefile captures.
    _setup_logging(sys.stdout if args.command == "run" else sys.stderr)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "options":
        return cmd_options(args)
    if args.command == "check":
        return cmd_check(args)
    return cmd_resolve(args)
