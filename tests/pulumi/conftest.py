"""Fixtures for the Pulumi program's tests: ``run_stack`` runs pulumi/__main__.py once per call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest
from pulumi_harness import AwsMocks, RunStack, StackRun, as_cli_config, base_config, run_program


def pytest_configure(config: pytest.Config) -> None:
    # pulumi_aws warns about its own deprecated V2 aliases when it is imported; the program uses
    # none of them (test_pulumi_storage checks the resource types), so these warnings are noise here.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws")


@pytest.fixture
def mocks() -> AwsMocks:
    return AwsMocks()


@pytest.fixture
def run_stack(monkeypatch: pytest.MonkeyPatch, mocks: AwsMocks) -> Iterator[RunStack]:
    """Run the program with ``base_config()`` (or ``config``) updated by ``overrides``; None removes a key.

    The config reaches the program the way the Pulumi CLI hands it over: the PULUMI_CONFIG
    environment variable, every value a string.
    """

    def run(overrides: dict[str, Any] | None = None, *, config: dict[str, Any] | None = None) -> StackRun:
        merged = base_config() if config is None else dict(config)
        for key, value in (overrides or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        monkeypatch.setenv("PULUMI_CONFIG", json.dumps(as_cli_config(merged)))
        return run_program(mocks)

    yield run
    pulumi.runtime.reset_options()
