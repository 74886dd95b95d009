"""`rayops-local down --all` takes down every cloud `list` finds, each by its own name, and nothing else.

No machine is touched: discovery and each cloud's `down` are stand-ins recording what they were asked
(a real `down --all` would remove every cloud on this host, other engineers' included). <1 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rayops.localcloud import cli
from rayops.localcloud.cloud import LocalCloud


@pytest.fixture
def downed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    taken: list[tuple[str, str]] = []
    monkeypatch.setattr(
        cli, "local_clouds", lambda: {"alpha": "10.213.60.0/24", "beta": None, "gamma": "10.213.62.0/24"}
    )
    monkeypatch.setattr(LocalCloud, "down", lambda self: taken.append((self.spec.name, self.spec.subnet)))
    return taken


def test_down_all_takes_down_every_listed_cloud_by_name(
    downed: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["down", "--all", "--state-dir", str(tmp_path)]) == 0
    # Each with the subnet its bridge carries; one without a bridge gets the placeholder `down` never acts on.
    assert downed == [("alpha", "10.213.60.0/24"), ("beta", "10.213.7.0/24"), ("gamma", "10.213.62.0/24")]


def test_down_all_with_a_name_is_refused_in_one_sentence(
    downed: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["down", "--all", "--name", "alpha", "--state-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "rayops-local: error: `down --all` removes every cloud: leave out --name, or --all\n"
    )
    assert downed == []


def test_down_all_with_no_cloud_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "local_clouds", dict)
    monkeypatch.setattr(LocalCloud, "down", lambda self: pytest.fail("nothing to take down"))
    assert cli.main(["down", "--all"]) == 0
    assert "no local cloud on this host; nothing to do" in capsys.readouterr().out
