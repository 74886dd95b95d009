"""Experiment tracking: one MLflow run per workflow run, logged from the driver; never blocks training.

:func:`track` is the one entry point (``pipeline.artifacts_stage`` calls it once the model, metrics,
report and plots exist). It logs to the MLflow tracking server at ``config.tracking_uri`` (train.yml
passes the head's, on loopback):

* experiment ``rayops-zone<N>``, one run named after the rayops run id;
* params: the booster's settings, the splits and the promotion thresholds (:func:`run_params`);
* metrics: both protocols for both models, ``<protocol>/<model>/<metric>`` (:func:`run_metrics`);
* tags: the rayops run id, data version id and sha256, git sha, package versions, the S3 URIs,
  the promotion decision (:func:`run_tags`);
* artifacts: the features manifest, the report with its plots, the package versions, and the model
  in MLflow's xgboost flavour, registered as ``rayops-zone<N>``; only a promoted run moves the
  registered model's ``champion`` alias to its version, and only once its ``current.json`` write has
  succeeded (:func:`settle`, after the conditional promotion): a run that loses the promotion race to
  another run never moves the alias, and its tags say ``rayops.promoted=false``.

The server proxies artifacts into the models bucket, so the driver needs no S3 settings for MLflow.
``current.json`` stays the source of truth for serving; the alias mirrors it.

Tracking is best effort: without a URI it is off; without the ``mlflow`` client (the py39 profile),
with the server down, or on any MLflow error, one warning sentence is logged, the run trains,
evaluates and promotes as before, and the returned record (``tracking`` in metrics.json and in the
model's metadata.json) says ``"tracked": false`` and why. Requests are bounded
(:data:`REQUEST_TIMEOUT_S`, :data:`REQUEST_RETRIES`) so a hanging server costs seconds, not minutes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHAMPION = "champion"
#: MLflow's own HTTP settings for the driver (unless already set in its environment): a down or hung
#: server must not hold a finished training run for MLflow's default of 7 retries with 120 s timeouts.
REQUEST_TIMEOUT_S = 20
REQUEST_RETRIES = 2
HEALTH_TIMEOUT_S = 5.0
_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_S),
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(REQUEST_RETRIES),
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    # The nodes have no git (the run's commit comes with --git-sha): without this MLflow's GitPython prints
    # a 13-line warning three times into every job's output.
    "GIT_PYTHON_REFRESH": "quiet",
}


def experiment_name(target_zone: int) -> str:
    return f"rayops-zone{target_zone}"


def registered_model_name(target_zone: int) -> str:
    return f"rayops-zone{target_zone}"


def run_params(metrics: Mapping[str, Any]) -> dict[str, str]:
    """The run's params as MLflow stores them (strings): the booster's settings (metrics.json's
    ``params``, names unchanged), the splits and the promotion thresholds."""
    params: dict[str, Any] = dict(metrics["params"])
    splits = metrics["splits"]
    params["target_zone"] = metrics["target_zone"]
    params["holdout_weeks"] = splits["holdout"]["weeks"]
    params["test_fraction"] = splits["seed_protocol"]["test_fraction"]
    params["split_seed"] = splits["seed_protocol"]["seed"]
    params["num_workers"] = metrics["training"]["requested_workers"]
    params["cpus_per_worker"] = metrics["training"]["cpus_per_worker"]
    for name, value in metrics["promotion"]["thresholds"].items():
        params[name] = "none" if value is None else value
    return {name: str(value) for name, value in params.items()}


def run_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``<protocol>/<model>/<metric>`` for both protocols and both models (the UI groups by prefix)."""
    return {
        f"{protocol}/{model}/{name}": float(value)
        for protocol in ("holdout", "seed_protocol")
        for model, scores in metrics[protocol].items()
        for name, value in scores.items()
    }


def run_tags(metrics: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, str]:
    """Lineage as tags: rayops' ids and URIs, the data version, code and library versions, the decision."""
    tags = {
        "rayops.run_id": metrics["run_id"],
        "rayops.target": metrics["target"],
        "rayops.data_version": metrics["data_version"],
        "rayops.data_sha256": metrics["data_sha256"],
        "rayops.raw_uri": metrics["raw_uri"],
        "rayops.model_uri": metrics["model_uri"],
        "rayops.model_version_id": metrics["model_version_id"],
        "rayops.metadata_uri": metrics["metadata_uri"],
        "rayops.metrics_uri": metrics["metrics_uri"],
        "rayops.features_manifest_uri": metrics["features_manifest_uri"],
        "rayops.promoted": str(bool(metrics["promoted"])).lower(),
        "rayops.decision": metrics["promotion"]["decision"],
        "rayops.training_mode": metrics["training"]["mode"],
    }
    if metrics.get("git_sha"):
        tags["rayops.git_sha"] = metrics["git_sha"]
        tags["mlflow.source.git.commit"] = metrics["git_sha"]
    for name, version in metadata.get("package_versions", {}).items():
        tags[f"rayops.package.{name}"] = version
    # MLflow caps a tag value at 8000 characters; ours are ids, URIs and one sentence.
    return {key: str(value)[:8000] for key, value in tags.items() if value is not None}


def _model_requirements(package_versions: Mapping[str, str]) -> list[str]:
    """The model's pip requirements, given instead of MLflow's inference (a subprocess, seconds)."""
    for name in ("xgboost-cpu", "xgboost"):
        if name in package_versions:
            return [f"{name}=={package_versions[name]}"]
    return []


def untracked(reason: str, uri: str | None, **extra: Any) -> dict[str, Any]:
    return {"tracked": False, "tracking_uri": uri, "reason": reason, **extra}


def server_answers(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    """None when ``<uri>/health`` answers 200, else why not (in words)."""
    try:
        # http(s) only: WorkflowConfig checked the URI's scheme
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as answer:  # noqa: S310
            if answer.status == 200:
                return None
            return f"HTTP {answer.status}"
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", None)
        return f"{type(reason or err).__name__}: {reason or err}"


def track(
    *,
    tracking_uri: str | None,
    metrics: Mapping[str, Any],
    metadata: Mapping[str, Any],
    manifest: Mapping[str, Any],
    booster: Any,
    sample: Any,
    images: Mapping[str, bytes],
    report: str,
) -> dict[str, Any]:
    """Log the run (see the module docstring); returns the ``tracking`` record. Never raises.

    ``sample`` is a few feature rows (a pandas frame) for the model's signature.
    """
    if not tracking_uri:
        log.info("tracking: off (no --tracking-uri)")
        return untracked("no tracking URI was given (--tracking-uri)", None)
    try:
        import mlflow  # noqa: F401  # the py39 profile has no MLflow client
    except ImportError:
        return _warn(untracked("the mlflow client is not installed in the job's Python", tracking_uri))
    for key, value in _CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    down = server_answers(tracking_uri)
    if down is not None:
        return _warn(untracked(f"the MLflow server at {tracking_uri} does not answer ({down})", tracking_uri))
    try:
        return _log_run(tracking_uri, metrics, metadata, manifest, booster, sample, images, report)
    except Exception as err:  # tracking must not fail a trained run: any MLflow error becomes the record
        text = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
        return _warn(
            untracked(
                f"logging to MLflow at {tracking_uri} failed ({type(err).__name__}: {text})", tracking_uri
            )
        )


def _warn(record: dict[str, Any]) -> dict[str, Any]:
    log.warning(
        "tracking: this run is not tracked in MLflow: %s; training, evaluation and promotion go on as usual",
        record["reason"],
    )
    return record


def _log_run(
    uri: str,
    metrics: Mapping[str, Any],
    metadata: Mapping[str, Any],
    manifest: Mapping[str, Any],
    booster: Any,
    sample: Any,
    images: Mapping[str, bytes],
    report: str,
) -> dict[str, Any]:
    import mlflow
    import mlflow.xgboost
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(uri)
    zone = int(metrics["target_zone"])
    model_name = registered_model_name(zone)
    experiment = mlflow.set_experiment(experiment_name(zone))
    client = MlflowClient(uri)
    with mlflow.start_run(run_name=metrics["run_id"], tags=run_tags(metrics, metadata)) as run:
        run_id = run.info.run_id
        mlflow.log_params(run_params(metrics))
        mlflow.log_metrics(run_metrics(metrics))
        mlflow.log_dict(dict(manifest), "features/manifest.json")
        mlflow.log_dict(dict(metadata.get("package_versions", {})), "package_versions.json")
        with tempfile.TemporaryDirectory(prefix="rayops-tracking-") as folder:
            report_dir = Path(folder) / "report"
            report_dir.mkdir()
            (report_dir / "report.md").write_text(report, encoding="utf-8")
            for name, png in images.items():
                (report_dir / name).write_bytes(png)
            mlflow.log_artifacts(str(report_dir), "report")
        signature = infer_signature(sample, booster.inplace_predict(sample))
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            model_format="ubj",
            signature=signature,
            registered_model_name=model_name,
            await_registration_for=0,
            pip_requirements=_model_requirements(metadata.get("package_versions", {})),
        )
        version = str(info.registered_model_version)
        client.set_model_version_tag(model_name, version, "rayops.run_id", metrics["run_id"])
        client.set_model_version_tag(
            model_name, version, "rayops.promoted", str(bool(metrics["promoted"])).lower()
        )
    record = {
        "tracked": True,
        "tracking_uri": uri,
        "experiment_id": experiment.experiment_id,
        "experiment_name": experiment.name,
        "mlflow_run_id": run_id,
        "model_uri": info.model_uri,
        "registered_model": model_name,
        "model_version": version,
        "alias": CHAMPION if metrics["promoted"] else None,
    }
    log.info(
        "tracking: MLflow run %s in experiment %s, model %s version %s%s",
        run_id,
        experiment.name,
        model_name,
        version,
        f" (alias {CHAMPION} once promoted)"
        if metrics["promoted"]
        else " (not promoted: the champion alias stays)",
    )
    return record


def settle(record: dict[str, Any], promoted: bool) -> dict[str, Any]:
    """After the promotion's conditional write: the alias moves to this run's version if it won; if it lost,
    the version's and the run's ``rayops.promoted`` tags become ``false`` and the record's alias ``None``.

    Best effort like :func:`track`: an MLflow error is one warning (the pointer has the last word).
    """
    if not record.get("tracked"):
        return record
    try:
        from mlflow import MlflowClient

        client = MlflowClient(record["tracking_uri"])
        name, version = record["registered_model"], record["model_version"]
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
            return {**record, "alias": CHAMPION}
        client.set_model_version_tag(name, version, "rayops.promoted", "false")
        client.set_tag(record["mlflow_run_id"], "rayops.promoted", "false")
        return {**record, "alias": None}
    except Exception as err:  # as in track(): never fail a finished run over MLflow
        log.warning(
            "tracking: MLflow's %s alias and tags could not be updated after the promotion (%s: %s); "
            "current.json is what serving follows",
            CHAMPION,
            type(err).__name__,
            str(err).strip().splitlines()[0] if str(err).strip() else "no message",
        )
        return record
