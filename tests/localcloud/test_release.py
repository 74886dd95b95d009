"""The machines' Debian release (`rayops-local up --release`, `make local-up RELEASE=`), no machine booted.

A bullseye cloud's machines are booted by the py39 Molecule scenario (molecule/py39); here: the option, its
one-sentence refusal, one cached image per release, and the default image keeping the id it always had.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from localcloud_helpers import cli

from rayops.localcloud import image
from rayops.localcloud.cloud import CloudSpec, CloudState, LocalCloud
from rayops.localcloud.errors import LocalCloudError

REPO = Path(__file__).resolve().parents[2]
SENTENCE = (
    "release 'jammy' is not supported: use one of bookworm (Debian 12, Python 3.11), "
    "bullseye (Debian 11, Python 3.9), e.g. --release bookworm"
)


def test_a_bad_release_is_one_sentence_naming_the_supported_ones() -> None:
    with pytest.raises(LocalCloudError) as err:
        LocalCloud(CloudSpec(name="rrel", release="jammy"))
    assert str(err.value) == SENTENCE


def test_the_cli_refuses_a_bad_release_before_anything_happens(tmp_path: Path) -> None:
    state = tmp_path / "st"
    proc = cli("up", "--name", "rrel", "--release", "jammy", "--state-dir", str(state))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"rayops-local: error: {SENTENCE}"
    assert proc.stdout == ""
    assert not state.exists()


def test_the_cli_help_names_the_releases_and_the_default() -> None:
    out = " ".join(cli("up", "--help").stdout.split())
    assert "--release RELEASE Debian release of the machines: bookworm (Debian 12, Python 3.11), " in out
    assert "bullseye (Debian 11, Python 3.9); default bookworm" in out


def test_make_local_up_passes_release_through() -> None:
    def dry_run(*args: str) -> str:
        proc = subprocess.run(
            ["make", "-n", "--no-print-directory", "local-up", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout

    assert "--release bullseye" in dry_run("RELEASE=bullseye")
    assert "--release bookworm" in dry_run()


def test_each_release_has_its_own_image_and_bookworm_keeps_its_id() -> None:
    # The id every cached bookworm image (and every running cloud's lower layer) has had since the image's
    # recipe version 1: adding releases must not rebuild it or strand the overlays on it.
    assert image.image_id() == image.image_id("bookworm") == "bookworm-501167b529"
    assert image.image_id("bullseye").startswith("bullseye-")
    assert image.image_id("bullseye") != image.image_id("bookworm")


def test_ensure_image_builds_the_requested_release_into_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[tuple[Path, str]] = []

    def fake_build(path: Path, log: object, release: str) -> None:  # the real debootstrap: molecule/py39
        built.append((path, release))

    monkeypatch.setattr(image, "build_image", fake_build)
    root = image.ensure_image(tmp_path, print, "bullseye")
    assert built == [(tmp_path / image.image_id("bullseye"), "bullseye")]
    assert root == tmp_path / image.image_id("bullseye")


def test_the_release_is_kept_in_the_state_file_and_old_state_files_mean_bookworm(tmp_path: Path) -> None:
    spec = CloudSpec(name="rrel", state_dir=str(tmp_path), release="bullseye")
    CloudState(spec).save()
    loaded = CloudState.load(tmp_path)
    assert loaded is not None and loaded.spec.release == "bullseye"
    # A state file written before the option existed (a cloud another engineer still has up).
    data = json.loads((tmp_path / "state.json").read_text())
    del data["spec"]["release"]
    (tmp_path / "state.json").write_text(json.dumps(data))
    loaded = CloudState.load(tmp_path)
    assert loaded is not None and loaded.spec.release == "bookworm"
