"""The HTTP API of one zone's model (FastAPI: pydantic validation and an OpenAPI page).

Routes, under the zone's prefix (``/zone1``, ... in Ray Serve):

* ``POST /predict``  ``{"instances": [{feature: value, ...}, ...]}`` -> predictions (the batch route);
* ``POST /forecast`` raw readings (the dataset's columns) -> the next hour's prediction;
* ``POST /actuals``  the rows of past hours (as for /predict) with the consumption observed -> the served
  model's error on them; the errors feed its rolling MAE/RMSE (``ray_rayops_live_*``);
* ``GET /model``     what is served, with its quality in live use (drift scores, rolling error);
* ``GET /docs``, ``GET /openapi.json`` the OpenAPI page (no model or data in it).

Every route but the OpenAPI page needs ``Authorization: Bearer <serve token>``. Every error is a
4xx whose JSON body is ``{"error": "<one sentence>"}``; nothing a client sends gives a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rayops.serving.forecast import ForecastError, build_row
from rayops.serving.model import ModelError, ServedModel
from rayops.serving.service import ModelService

log = logging.getLogger("rayops.serving")

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class ApiError(Exception):
    def __init__(self, status: int, sentence: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence
        self.headers = headers


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[dict[str, Number]] = Field(
        min_length=1, description="rows of the model's features (GET /model lists them), one object per row"
    )


class ActualsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[dict[str, Number]] = Field(
        min_length=1, description="rows of past hours, of the model's features (as sent to /predict)"
    )
    actuals: list[Number] = Field(
        min_length=1, description="the consumption observed in each of those hours, in the instances' order"
    )


class Reading(BaseModel):
    """One 10-minute reading, named as in the dataset (Kaggle's or UCI's spelling)."""

    model_config = ConfigDict(extra="allow")


class ForecastRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    readings: list[dict[str, Any]] = Field(
        description="the history: Datetime, Temperature, Humidity, WindSpeed, GeneralDiffuseFlows, "
        "DiffuseFlows "
        "and PowerConsumption_Zone<N>, covering the lags (168 hours before the hour to predict)"
    )
    weather: list[dict[str, Any]] = Field(
        description="the weather readings (Datetime and the five weather columns) of the hour to predict"
    )


class ModelInfo(BaseModel):
    run_id: str
    data_version: str
    zone: int


class PredictResponse(BaseModel):
    predictions: list[float]
    model: ModelInfo


class ActualsResponse(BaseModel):
    count: int
    mae: float
    rmse: float
    live_error: dict[str, Any] = Field(description="this replica's rolling error over its last actuals")
    model: ModelInfo


class ForecastResponse(BaseModel):
    timestamp: str
    prediction: float
    model: ModelInfo


def _info(model: ServedModel) -> ModelInfo:
    return ModelInfo(run_id=model.source.run_id, data_version=model.data_version, zone=model.source.zone)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "the body"


def _validation_sentence(err: RequestValidationError) -> tuple[int, str]:
    first = err.errors()[0]
    kind = first.get("type", "")
    where = _location(tuple(first.get("loc", ())))
    if kind == "json_invalid":
        return 400, "the body is not valid JSON: send a JSON object"
    if kind == "missing" and where == "the body":
        return 400, "the body is empty: send a JSON object (see GET /docs)"
    if kind == "missing":
        return 422, f"{where} is missing (see GET /docs)"
    if kind == "extra_forbidden":
        return 422, f"{where} is not a field of this request (see GET /docs)"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return 422, f"{where} is {first.get('input')!r}: it must be a finite number"
    if kind == "too_short":
        return 422, f"{where} is empty: send at least one row"
    message = str(first.get("msg", "is not valid")).rstrip(".")
    return 422, f"{where}: {message[0].lower() + message[1:]} (see GET /docs)"


class BodyGuard:
    """Before any route: refuse bodies over ``limit`` bytes (413), and JSON bodies that are empty, not JSON,
    not an object, or hold NaN/Infinity (which Python's json accepts and JSON does not)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        too_big = f"the body is larger than {self.limit} bytes: send fewer rows per call"
        if length.isdigit() and int(length) > self.limit:
            await _error(413, too_big)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _error(413, too_big)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if headers.get(b"content-type", b"").split(b";")[0].strip().lower() == b"application/json":
            problem = _json_problem(body)
            if problem is not None:
                await _error(*problem)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class _Constant(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _Constant(name)


def _json_problem(body: bytes) -> tuple[int, str] | None:
    if not body.strip():
        return 400, "the body is empty: send a JSON object (see GET /docs)"
    try:
        parsed = json.loads(body, parse_constant=_refuse_constant)
    except _Constant as err:
        return 422, f"the body holds {err.args[0]}, which is not a number in JSON: send finite numbers"
    except ValueError:
        return 400, "the body is not valid JSON: send a JSON object"
    if not isinstance(parsed, dict):
        return 400, f"the body is a JSON {type(parsed).__name__}, not an object: send a JSON object"
    return None


def _error(status: int, sentence: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status, headers=headers)


def build_app(service: ModelService) -> FastAPI:
    """The API of ``service``'s zone; every route reads the model ``service`` holds at that moment."""
    settings = service.settings
    zone = settings.zone
    app = FastAPI(
        title=f"rayops: zone {zone} consumption model",
        description="The promoted XGBoost model of one zone. Authorize with the serve token (Bearer).",
        version="1",
    )

    async def require_token(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "this route needs Authorization: Bearer <serve token> "
                "(the token is in .rayops/secrets/<cluster>/serve_token)",
                {"WWW-Authenticate": "Bearer"},
            )
        if not service.token_ok(token.strip()):
            raise ApiError(
                401,
                "the serve token is wrong: use .rayops/secrets/<cluster>/serve_token",
                {"WWW-Authenticate": "Bearer"},
            )

    async def require_json(request: Request) -> None:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(
                415, f"the body must be JSON (Content-Type: application/json), not {kind or 'unnamed'}"
            )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.sentence, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        status, sentence = _validation_sentence(err)
        return _error(status, sentence)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        sentences = {
            404: "no such route: use /predict, /forecast, /actuals or /model (see /docs)",
            405: "this route does not take that method (see /docs)",
        }
        return _error(err.status_code, sentences.get(err.status_code, str(err.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("serving: unexpected error")
        return _error(500, f"the model server failed on this request ({type(err).__name__}); it is logged")

    guarded = [Depends(require_token)]
    posted = [Depends(require_token), Depends(require_json)]

    def served() -> ServedModel:
        if service.model is None:
            raise ApiError(503, f"zone {zone} has no model loaded yet: retry in a few seconds")
        return service.model

    async def predict_rows(matrix: np.ndarray) -> tuple[np.ndarray, ServedModel]:
        try:
            return await service.predict(matrix)
        except ModelError as err:
            raise ApiError(503, str(err)) from err

    def rows_matrix(rows: list[dict[str, float]], features: tuple[str, ...]) -> np.ndarray:
        if len(rows) > settings.max_rows:
            raise ApiError(
                413, f"{len(rows)} instances is more than {settings.max_rows} per call: split the rows"
            )
        wanted = set(features)
        matrix = np.empty((len(rows), len(features)), dtype="float64")
        for i, row in enumerate(rows):
            if row.keys() != wanted:
                unknown = sorted(set(row) - wanted)
                if unknown:
                    raise ApiError(
                        422,
                        f"instances[{i}] has the unknown feature {unknown[0]!r}: "
                        "GET /model lists the features",
                    )
                missing = [f for f in features if f not in row]
                raise ApiError(
                    422,
                    f"instances[{i}] lacks the feature {missing[0]!r}"
                    + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                    + ": GET /model lists the features",
                )
            matrix[i] = [row[f] for f in features]
        return matrix

    @app.post("/predict", response_model=PredictResponse, dependencies=posted)
    async def predict(body: PredictRequest) -> PredictResponse:
        matrix = rows_matrix(body.instances, served().features)
        predictions, model = await predict_rows(matrix)
        return PredictResponse(predictions=predictions.tolist(), model=_info(model))

    @app.post("/actuals", response_model=ActualsResponse, dependencies=posted)
    async def actuals(body: ActualsRequest) -> ActualsResponse:
        if len(body.actuals) != len(body.instances):
            raise ApiError(
                422,
                f"{len(body.actuals)} actuals for {len(body.instances)} instances: "
                "send one observed value per row",
            )
        matrix = rows_matrix(body.instances, served().features)
        try:
            call, live, model = await service.actuals(matrix, np.asarray(body.actuals, dtype="float64"))
        except ModelError as err:
            raise ApiError(503, str(err)) from err
        return ActualsResponse(**call, live_error=live, model=_info(model))

    @app.post("/forecast", response_model=ForecastResponse, dependencies=posted)
    async def forecast(body: ForecastRequest) -> ForecastResponse:
        served()
        count = len(body.readings) + len(body.weather)
        if count > settings.max_readings:
            raise ApiError(
                413,
                f"{count} readings is more than {settings.max_readings} per call: send the last 169 hours",
            )
        try:
            built = build_row(body.readings, body.weather, zone)
        except ForecastError as err:
            raise ApiError(422, str(err)) from err
        predictions, model = await predict_rows(built.row[None, :])
        return ForecastResponse(
            timestamp=built.timestamp.isoformat(), prediction=float(predictions[0]), model=_info(model)
        )

    @app.get("/model", dependencies=guarded)
    async def model() -> dict[str, Any]:
        model = served()
        monitor = service.monitor_of(model)
        quality = monitor.snapshot() if monitor is not None else None
        return {**model.describe(), "last_error": service.last_error, "quality": quality}

    app.add_middleware(BodyGuard, limit=settings.max_body_bytes)
    return app
