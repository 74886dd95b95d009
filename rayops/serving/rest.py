"""Serve's REST API on the dashboard (what ``serve deploy`` and ``serve status`` use), with the Ray token.

``apply`` is idempotent: it compares the config with what Serve runs and PUTs only a difference.
``keep`` re-applies the last config when Serve lost it (a head restart makes a new, empty cluster).
Standard library only; it runs on the head as the Ray user.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

API = "/api/serve/applications/"


class ServeApiError(RuntimeError):
    """The dashboard refused or failed; one sentence."""


@dataclass
class ServeApi:
    dashboard_url: str
    token: str | None = None
    timeout_s: float = 30.0

    def _request(self, method: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        url = self.dashboard_url.rstrip("/") + API
        if not url.startswith(("http://", "https://")):
            raise ServeApiError(
                f"the dashboard URL {self.dashboard_url!r} is not http(s)://: pass the Ray dashboard's"
            )
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (http(s) only, checked above)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (checked above)
                text = response.read().decode()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace").strip().splitlines()
            reason = detail[-1][:300] if detail else err.reason
            raise ServeApiError(f"{method} {API} answered {err.code} ({reason})") from err
        except (urllib.error.URLError, OSError) as err:
            raise ServeApiError(f"the Ray dashboard at {self.dashboard_url} does not answer ({err})") from err
        return json.loads(text) if text.strip() else None

    def details(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET")
        return result

    def put(self, config: dict[str, Any]) -> None:
        self._request("PUT", config)

    def delete(self) -> None:
        """Every app, and Serve itself."""
        self._request("DELETE")


def _matches(desired: Any, deployed: Any) -> bool:
    """Every key we set has the value we set (Serve adds defaults of its own to what it reports)."""
    if isinstance(desired, dict):
        return isinstance(deployed, dict) and all(_matches(v, deployed.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(deployed, list)
            and len(desired) == len(deployed)
            and all(_matches(a, b) for a, b in zip(desired, deployed, strict=True))
        )
    if isinstance(desired, float) or isinstance(deployed, float):
        return isinstance(deployed, (int, float)) and float(desired) == float(deployed)
    return bool(desired == deployed)


@dataclass
class Difference:
    missing: list[str] = field(default_factory=list)  # apps Serve does not run
    changed: list[str] = field(default_factory=list)  # apps whose config differs
    extra: list[str] = field(default_factory=list)  # apps Serve runs that the config does not name
    options: bool = False  # proxy location or HTTP options differ

    def __bool__(self) -> bool:
        return bool(self.missing or self.changed or self.extra or self.options)

    def sentence(self) -> str:
        parts = []
        for what, names in (("new", self.missing), ("changed", self.changed), ("removed", self.extra)):
            if names:
                parts.append(f"{what}: {', '.join(names)}")
        if self.options:
            parts.append("HTTP options changed")
        return "; ".join(parts) or "no change"


def difference(config: dict[str, Any], details: dict[str, Any]) -> Difference:
    running = details.get("applications") or {}
    diff = Difference()
    for app in config["applications"]:
        name = app["name"]
        if name not in running:
            diff.missing.append(name)
        elif not _matches(app, running[name].get("deployed_app_config") or {}):
            diff.changed.append(name)
    diff.extra = sorted(set(running) - {a["name"] for a in config["applications"]})
    if running:  # Serve's options are set once, when Serve starts
        http = details.get("http_options") or {}
        diff.options = not _matches(config.get("http_options", {}), http)
    return diff


def statuses(details: dict[str, Any]) -> dict[str, str]:
    return {name: str(app.get("status")) for name, app in (details.get("applications") or {}).items()}


def wait_running(
    api: ServeApi,
    names: list[str],
    timeout_s: float,
    log: Callable[[str], None] = print,
    poll_s: float = 2.0,
) -> dict[str, Any]:
    """Until every named app is RUNNING; a DEPLOY_FAILED app or the timeout raises with Serve's message."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        try:
            details = api.details()
        except ServeApiError as err:
            details, state = {}, str(err)
        else:
            apps = details.get("applications") or {}
            for name in names:
                app = apps.get(name) or {}
                if app.get("status") == "DEPLOY_FAILED":
                    message = str(app.get("message", "")).strip().splitlines()
                    raise ServeApiError(
                        f"Serve could not deploy {name}: {message[-1][:400] if message else 'no message'}"
                    )
            state = ", ".join(f"{n} {(apps.get(n) or {}).get('status', 'absent')}" for n in names)
            if all((apps.get(n) or {}).get("status") == "RUNNING" for n in names):
                return details
        if state != last:
            log(f"serve: {state}")
            last = state
        if time.monotonic() > deadline:
            raise ServeApiError(f"the Serve apps are not running after {timeout_s:.0f} s ({state})")
        time.sleep(poll_s)
