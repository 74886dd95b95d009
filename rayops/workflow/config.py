"""Settings of one workflow run, validated once, with defaults in one place.

Every setting reaches the Ray workers through ``train_loop_config`` (see ``training.py``), never
through the driver's environment, so the same values apply on a laptop and on a 3-node cluster.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from rayops.workflow.errors import ConfigError

#: The Tetouan power-consumption data on the UCI archive (a zip holding one CSV, UCI column names).
UCI_URL = "https://archive.ics.uci.edu/static/public/849/power+consumption+of+tetouan+city.zip"
BUCKET_KINDS = ("raw", "features", "models", "results")
TARGET_ZONES = (1, 2, 3)
FEATURE_EXECUTORS = ("auto", "pandas", "ray")
#: The seed lab's recorded result on its random 80/20 split (hourly Zone 1 sums).
SEED_REFERENCE = {"target_zone": 1, "rmse": 8029.0, "mae": 5502.0}

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CLAIM_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_ENDPOINT_RE = re.compile(r"^https?://[^/\s:@]+(:[0-9]{1,5})?/?$")
#: Hosts a plain http:// dataset URL may name (a server on the machine itself, as the tests use).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Buckets:
    """The four buckets of the stack-output contract (``outputs.buckets``)."""

    raw: str
    features: str
    models: str
    results: str

    @classmethod
    def from_json(cls, text: str) -> Buckets:
        """Parse ``--buckets '{"raw": ..., "features": ..., "models": ..., "results": ...}'``."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"--buckets is not valid JSON ({err.msg} at character {err.pos}): pass an object like "
                '\'{"raw": "r", "features": "f", "models": "m", "results": "o"}\''
            ) from err
        return cls.from_mapping(value)

    @classmethod
    def from_mapping(cls, value: Any) -> Buckets:
        if not isinstance(value, dict):
            raise ConfigError(
                f"--buckets must be a JSON object with the keys {', '.join(BUCKET_KINDS)}, "
                f"got {type(value).__name__}"
            )
        missing = [k for k in BUCKET_KINDS if k not in value]
        extra = sorted(k for k in value if k not in BUCKET_KINDS)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks {', '.join(missing)}")
            if extra:
                parts.append(f"has unknown keys {', '.join(map(str, extra))}")
            raise ConfigError(
                f"--buckets {' and '.join(parts)}: it needs exactly the keys {', '.join(BUCKET_KINDS)} "
                "(the 'buckets' object of the stack outputs)"
            )
        for kind in BUCKET_KINDS:
            name = value[kind]
            if not isinstance(name, str) or not _BUCKET_RE.match(name):
                raise ConfigError(
                    f"--buckets: {kind} is {name!r}, which is not an S3 bucket name "
                    "(3-63 characters: lowercase letters, digits, dots and hyphens; no s3:// prefix)"
                )
        return cls(**{k: value[k] for k in BUCKET_KINDS})

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class XGBoostParams:
    """Booster settings. Deterministic: fixed ``seed``, ``hist`` trees, one thread per CPU of a worker.

    Defaults chosen on the real data by validation on the 4 weeks just before the holdout (the
    holdout itself was not looked at): eta 0.1 beat 0.05 and 0.03; more rounds or depth did not help.
    """

    num_boost_round: int = 400
    max_depth: int = 6
    eta: float = 0.1
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    seed: int = 42

    def __post_init__(self) -> None:
        _check_int("--num-boost-round", self.num_boost_round, 1, 100_000)
        _check_int("--max-depth", self.max_depth, 1, 64)
        _check_float("--eta", self.eta, 0.0, 1.0, low_open=True)
        _check_float("--subsample", self.subsample, 0.0, 1.0, low_open=True)
        _check_float("--colsample-bytree", self.colsample_bytree, 0.0, 1.0, low_open=True)
        _check_float("--min-child-weight", self.min_child_weight, 0.0, 1e9)
        _check_float("--reg-lambda", self.reg_lambda, 0.0, 1e9)
        _check_int("--seed", self.seed, 0, 2**31 - 1)

    def booster_params(self, nthread: int) -> dict[str, Any]:
        """The ``params`` dict for ``xgboost.train`` (the boosting rounds are passed separately)."""
        return {
            "objective": "reg:squarederror",
            "eval_metric": "rmse",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "seed": self.seed,
            "nthread": nthread,
        }


@dataclass(frozen=True)
class Thresholds:
    """Promotion gates on the time-ordered holdout, on top of "xgboost beats the baseline"."""

    min_r2: float | None = 0.9
    max_rmse: float | None = None
    max_mae: float | None = None
    max_mape: float | None = None  # percent
    #: How much higher (relative: 0.01 is 1 %) the holdout RMSE may be than the live model's on the
    #: same holdout; 0: no worse. The first model of a zone has nothing to beat.
    live_tolerance: float = 0.0

    def __post_init__(self) -> None:
        _check_float("--live-tolerance", self.live_tolerance, 0.0, 1.0)
        if self.min_r2 is not None:
            _check_float("--min-r2", self.min_r2, -1e9, 1.0)
        for flag, value in (
            ("--max-rmse", self.max_rmse),
            ("--max-mae", self.max_mae),
            ("--max-mape", self.max_mape),
        ):
            if value is not None:
                _check_float(flag, value, 0.0, math.inf, low_open=True)

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id such as ``20260101T120000Z-1a2b3c``."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class WorkflowConfig:
    """Everything one run needs. Build it with keywords; it validates itself."""

    buckets: Buckets
    dataset: str = UCI_URL
    s3_endpoint_url: str | None = None
    target_zone: int = 1
    run_id: str = field(default_factory=new_run_id)
    num_workers: int | None = None  # None: auto (one process for small tables); 0: one process; N: N workers
    cpus_per_worker: int = 1
    features_executor: str = "auto"  # auto, pandas (on the driver) or ray (Ray Data)
    xgboost: XGBoostParams = field(default_factory=XGBoostParams)
    thresholds: Thresholds = field(default_factory=Thresholds)
    holdout_weeks: int = 4
    test_fraction: float = 0.2
    split_seed: int = 42
    report_every: int = 100
    checkpoint_every: int = 50  # a Ray Train report with a checkpoint every N rounds (worker group only)
    max_failures: int = 3  # worker group restarts (from the last checkpoint) after a lost worker
    placement_timeout_s: float = 180.0  # a worker group not placed by then fails the run with a sentence
    git_sha: str | None = None
    fetch_timeout_s: float = 120.0
    tracking_uri: str | None = None  # MLflow tracking server (train.yml: the head's); None: not tracked
    # The id of one train.yml invocation: a job resubmitted after its driver was lost with the head passes
    # the same token and continues the run it claimed (promotion.claim_run); None: the run id is new or taken.
    claim_token: str | None = None

    def __post_init__(self) -> None:
        if self.target_zone not in TARGET_ZONES:
            raise ConfigError(
                f"--target-zone is {self.target_zone!r}, but the Tetouan data has zones 1, 2 and 3: "
                "pass one of them"
            )
        if not _RUN_ID_RE.match(self.run_id):
            raise ConfigError(
                f"--run-id {self.run_id!r} is not usable in S3 keys: use 1-64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        if self.s3_endpoint_url is not None and not _ENDPOINT_RE.match(self.s3_endpoint_url):
            raise ConfigError(
                f"--s3-endpoint-url {self.s3_endpoint_url!r} is not an endpoint URL: pass "
                "http(s)://host[:port] without a path or credentials, or leave it out on AWS"
            )
        if self.tracking_uri is not None and not _ENDPOINT_RE.match(self.tracking_uri):
            raise ConfigError(
                f"--tracking-uri {self.tracking_uri!r} is not an MLflow server URL: pass "
                "http(s)://host[:port] without a path or credentials, or leave it out to run untracked"
            )
        if not self.dataset.strip():
            raise ConfigError("--dataset is empty: pass a path, an s3:// URI or an https:// URL")
        check_dataset_url(self.dataset)
        if self.num_workers is not None:
            _check_int("--num-workers", self.num_workers, 0, 1024)
        if self.features_executor not in FEATURE_EXECUTORS:
            raise ConfigError(f"--features-executor is {self.features_executor!r}: pass auto, pandas or ray")
        _check_int("--cpus-per-worker", self.cpus_per_worker, 1, 1024)
        _check_int("--holdout-weeks", self.holdout_weeks, 1, 52)
        _check_float("--test-fraction", self.test_fraction, 0.0, 0.9, low_open=True)
        _check_int("--split-seed", self.split_seed, 0, 2**31 - 1)
        _check_int("--report-every", self.report_every, 1, 100_000)
        _check_int("--checkpoint-every", self.checkpoint_every, 0, 100_000)
        _check_int("--max-failures", self.max_failures, 0, 100)
        _check_float("--placement-timeout-s", self.placement_timeout_s, 10.0, 86_400.0)
        if self.claim_token is not None and not _CLAIM_TOKEN_RE.match(self.claim_token):
            raise ConfigError(
                f"--claim-token is not a claim token: pass 16-64 letters, digits, '_' or '-' "
                f"(got {len(self.claim_token)} characters), or leave it out"
            )
        if self.git_sha is not None and not re.fullmatch(r"[0-9a-fA-F]{7,40}", self.git_sha):
            raise ConfigError(f"--git-sha {self.git_sha!r} is not a git commit id: pass 7-40 hex digits")

    @property
    def holdout_hours(self) -> int:
        return self.holdout_weeks * 7 * 24

    @property
    def model_prefix(self) -> str:
        """Key prefix of this target's models, e.g. ``zone1`` (its ``current.json`` lives there)."""
        return f"zone{self.target_zone}"


@dataclass(frozen=True)
class Option:
    """One tunable option of a run: ``--<name with dashes>`` on the CLI, a key of train.yml's
    ``train_params``. Its default is the dataclass field's (``owner``), never restated."""

    name: str
    owner: type
    kind: str  # int, float, optional_float (a number or none/off) or workers (auto or a number)
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default(self) -> Any:
        return default_of(self.owner, self.name)


def default_of(owner: type, name: str) -> Any:
    """The default of the dataclass field ``owner.name``: the one place each default is written."""
    spec = next(f for f in fields(owner) if f.name == name)
    if spec.default is not MISSING:
        return spec.default
    return spec.default_factory()  # type: ignore[operator]  # MISSING only without either


#: The options a run may tune (``python -m rayops.workflow options --json`` prints them with their
#: defaults; train.yml accepts exactly these in ``train_params``).
OPTIONS = (
    Option(
        "num_workers",
        WorkflowConfig,
        "workers",
        "Ray Train workers: 'auto' (one process for a table that fits it, else one worker per node "
        "and physical core), 0 (one process) or N (N workers)",
    ),
    Option("cpus_per_worker", WorkflowConfig, "int", "CPUs (= XGBoost threads) per worker"),
    Option("num_boost_round", XGBoostParams, "int", "boosting rounds"),
    Option("max_depth", XGBoostParams, "int", "tree depth"),
    Option("eta", XGBoostParams, "float", "learning rate"),
    Option("subsample", XGBoostParams, "float", "row share per tree"),
    Option("colsample_bytree", XGBoostParams, "float", "feature share per tree"),
    Option("min_child_weight", XGBoostParams, "float", "minimum hessian sum of a leaf"),
    Option("reg_lambda", XGBoostParams, "float", "L2 regularisation"),
    Option("seed", XGBoostParams, "int", "XGBoost's random seed"),
    Option("holdout_weeks", WorkflowConfig, "int", "weeks at the end kept for the holdout"),
    Option("test_fraction", WorkflowConfig, "float", "seed protocol test share"),
    Option("split_seed", WorkflowConfig, "int", "seed protocol random_state"),
    Option("min_r2", Thresholds, "optional_float", "promotion gate on holdout R2 ('none': off)"),
    Option("max_rmse", Thresholds, "optional_float", "promotion gate on holdout RMSE ('none': off)"),
    Option("max_mae", Thresholds, "optional_float", "promotion gate on holdout MAE ('none': off)"),
    Option("max_mape", Thresholds, "optional_float", "promotion gate on holdout MAPE, percent ('none': off)"),
    Option(
        "live_tolerance",
        Thresholds,
        "float",
        "how much worse (relative holdout RMSE, 0.01 = 1 %) than the live model on the same holdout a "
        "promoted model may be",
    ),
    Option(
        "report_every",
        WorkflowConfig,
        "int",
        "rounds between progress lines",
    ),
    Option(
        "checkpoint_every",
        WorkflowConfig,
        "int",
        "rounds between Ray Train checkpoints of a worker group (0: only the final one); a restarted "
        "worker group resumes from the last",
    ),
    Option(
        "max_failures",
        WorkflowConfig,
        "int",
        "times Ray Train restarts a worker group that lost a worker, from the last checkpoint",
    ),
    Option(
        "placement_timeout_s",
        WorkflowConfig,
        "float",
        "seconds a worker group may wait to be placed before the run fails (a node gone, CPUs taken)",
    ),
)


def check_dataset_url(dataset: str) -> None:
    """Refuse plain http:// (anyone on the path can change the data) except from this machine itself."""
    from urllib.parse import urlsplit

    parts = urlsplit(dataset)
    if parts.scheme.lower() == "http" and (parts.hostname or "") not in LOOPBACK_HOSTS:
        shown = f"http://{parts.hostname or ''}{parts.path}"
        raise ConfigError(
            f"--dataset {shown} is plain HTTP, which anyone on the way can alter: use its https:// URL, "
            "or copy the file to the raw bucket and pass its s3:// URI"
        )


_KIND_TEXT = {
    "int": "a whole number",
    "float": "a number",
    "optional_float": "a number or none",
    "workers": "auto or a whole number",
}


def parse_option_value(option: Option, value: Any, where: str | None = None) -> Any:
    """An option's value as a run takes it, from the text of a command line or a JSON value
    (train.yml's ``train_params``); anything else raises ConfigError naming the value."""
    where = where or option.flag
    text = value.strip() if isinstance(value, str) else value
    try:
        if isinstance(text, bool):
            raise ValueError
        if option.kind == "optional_float" and (text is None or str(text).lower() in ("", "none", "off")):
            return None
        if option.kind == "workers" and (text is None or str(text).lower() in ("", "auto")):
            return None
        if option.kind in ("int", "workers"):
            if isinstance(text, float) and text.is_integer():
                return int(text)
            if isinstance(text, float):
                raise ValueError
            return int(text)
        return float(text)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where} is {value!r}, which is not {_KIND_TEXT[option.kind]}: pass e.g. "
            f"{'auto' if option.default is None and option.kind == 'workers' else option.default}"
        ) from None


def option_defaults() -> dict[str, Any]:
    """Every tunable option's name and default, in the order of OPTIONS."""
    return {option.name: option.default for option in OPTIONS}


def config_from_options(options: Mapping[str, Any], **settings: Any) -> WorkflowConfig:
    """A WorkflowConfig from tunable ``options`` (names of OPTIONS; the others keep their
    defaults) and the run's own ``settings`` (buckets, dataset, run_id, ...)."""
    unknown = sorted(set(options) - {option.name for option in OPTIONS})
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)}: a run takes only {', '.join(o.name for o in OPTIONS)}"
        )
    picked: dict[type, dict[str, Any]] = {XGBoostParams: {}, Thresholds: {}, WorkflowConfig: {}}
    for option in OPTIONS:
        if option.name in options:
            picked[option.owner][option.name] = options[option.name]
    return WorkflowConfig(
        xgboost=XGBoostParams(**picked[XGBoostParams]),
        thresholds=Thresholds(**picked[Thresholds]),
        **picked[WorkflowConfig],
        **settings,
    )


def _check_int(flag: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{flag} is {value!r}: pass a whole number from {low} to {high}")


def _check_float(flag: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and value <= high
    )
    if not ok:
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        top = "" if math.isinf(high) else f" and at most {high:g}"
        raise ConfigError(f"{flag} is {value!r}: pass a finite number {bound}{top}")
