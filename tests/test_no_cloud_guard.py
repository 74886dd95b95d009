"""The guard in tests/conftest.py (issue 27): a test not marked `localcloud` boots nothing, so neither does
`make test-unit`.

Each test runs an inner pytest (pytester, in a subprocess) on this repo's own conftest.py: a test without the
marker that requests a cloud fixture stops the run at collection with one sentence; one that creates a bridge
or boots a machine (through LocalCloud.up, the functions themselves, or a session fixture) fails with one
sentence naming it, and nothing of its cloud exists afterwards; with the marker, collection lets it through.
No machine is booted: ~10 s (four inner runs, a pytest start each).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from rayops.localcloud import network
from rayops.localcloud.cloud import CloudSpec, LocalCloud
from rayops.localcloud.errors import LocalCloudError
from rayops.localcloud.state import CGROUP_ROOTS

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")
INI = "[pytest]\nmarkers =\n    localcloud: boots the local cloud\n    slow: takes more than a minute\n"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="LocalCloud.up and `ip link` need root")

FIXTURE_SENTENCE = (
    "ERROR: test_machines.py::test_needs_machines (and 1 other test, in test_machines.py) is not marked "
    "localcloud but requests the fixture local_cloud, which boots a local cloud: add `pytestmark = "
    "[pytest.mark.localcloud, pytest.mark.slow]` to its module (or `@pytest.mark.localcloud` to the test) "
    "so that `make test-unit` leaves it out"
)
CALL_SENTENCE = (
    "{test} is not marked localcloud but called rayops.localcloud.{function}, which {does}: add "
    "`pytest.mark.localcloud` to the test (it then runs in `make test`, not in `make test-unit`) or stand in "
    "for that call"
)
BRIDGE = ("network.bridge_up", "creates a local cloud's bridge (`ip link add`) and its NAT rules")
BOOT = ("machines.launch", "boots a machine with systemd-nspawn")

MACHINE_TESTS = """
import pytest


@pytest.fixture
def trained(local_cloud):
    return local_cloud


def test_needs_machines(local_cloud):
    pass


def test_needs_them_through_a_fixture(trained):
    pass
"""

# {name}, {subnet}, {port}, {reached} are filled in: a cloud name, subnet and port nobody else uses.
MAKER_TESTS = """
from pathlib import Path

import pytest

from rayops.localcloud import image, machines, network, s3server
from rayops.localcloud.cloud import CloudSpec, LocalCloud


def spec(tmp_path):
    state_dir = str(tmp_path / "st")
    return CloudSpec(name="{name}", workers=1, subnet="{subnet}", s3_port={port}, state_dir=state_dir)


def test_up(tmp_path, monkeypatch):
    cache = tmp_path / "images"  # a complete image as far as ensure_image can tell: no debootstrap
    for name in [*image.REQUIRED_FILES, ".rayops-image"]:
        (cache / image.image_id() / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / image.image_id() / name).touch()

    def past_the_bridge(cloud_spec):  # without the guard up() gets here with the bridge up, and stops
        Path("{reached}").write_text(str(network.bridge_exists(cloud_spec.bridge)))
        raise RuntimeError("past the bridge")  # up() then takes down what it created

    monkeypatch.setattr(s3server, "start", past_the_bridge)
    LocalCloud(spec(tmp_path), image_cache=cache).up()


def test_bridge(tmp_path):
    network.bridge_up(spec(tmp_path))


def test_boot(tmp_path):
    cloud_spec = spec(tmp_path)
    cloud_spec.logs_dir.mkdir(parents=True)
    machines.launch(cloud_spec, cloud_spec.machines()[0])


@pytest.fixture(scope="session")
def session_cloud(tmp_path_factory):  # set up before any function-scoped fixture of the test
    network.bridge_up(spec(tmp_path_factory.mktemp("session")))


def test_session_fixture(session_cloud):
    pass
"""


def _inner(pytester: pytest.Pytester, **files: str) -> None:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini(INI)
    pytester.makepyfile(**files)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def test_an_unmarked_test_requesting_a_cloud_stops_the_run_with_one_sentence(
    pytester: pytest.Pytester,
) -> None:
    _inner(pytester, test_machines=MACHINE_TESTS)
    result = _run(pytester)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert FIXTURE_SENTENCE in result.stderr.lines, out
    assert "passed" not in out, out


def test_the_same_tests_marked_localcloud_pass_collection(pytester: pytest.Pytester) -> None:
    _inner(pytester, test_machines="import pytest\n\npytestmark = pytest.mark.localcloud\n" + MACHINE_TESTS)
    left_out = _run(pytester, "-m", "not localcloud")  # what `make test-unit` does with them
    assert left_out.ret == pytest.ExitCode.NO_TESTS_COLLECTED, left_out.stdout.str() + left_out.stderr.str()
    assert "2 deselected" in left_out.stdout.str()
    if os.geteuid() == 0:  # a non-root run of machine tests is refused (NEEDS_ROOT), collection included
        collected = _run(pytester, "--collect-only", "-q")
        out = collected.stdout.str() + collected.stderr.str()
        assert collected.ret == pytest.ExitCode.OK, out
        assert "2 tests collected" in out and "not marked localcloud" not in out, out


def _free_subnet() -> str:
    """A /24 in 10.213.200-249 that no address or route of this host overlaps."""
    for third in range(200, 250):
        subnet = f"10.213.{third}.0/24"
        try:
            network.check_subnet_free(ipaddress.IPv4Network(subnet))
        except LocalCloudError:
            continue
        return subnet
    pytest.fail("no free /24 in 10.213.200.0-10.213.249.0 for a cloud that is never made")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))  # noqa: S104 - only to learn a port nobody listens on
        port: int = sock.getsockname()[1]
        return port


def _what_exists(spec: CloudSpec) -> list[str]:
    """What of the cloud is on this host: its bridge, runtime folder, cgroups, machines' processes."""
    found = []
    link = subprocess.run(["ip", "link", "show", spec.bridge], capture_output=True, text=True, check=False)
    if link.returncode == 0 or "does not exist" not in link.stderr:
        found.append(f"bridge {spec.bridge}: {link.stdout or link.stderr}")
    if spec.runtime_dir.exists():
        found.append(f"folder {spec.runtime_dir}")
    found += [f"cgroup {root}" for root in CGROUP_ROOTS if (root / "rayops" / spec.name).exists()]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    found += [line for line in ps.splitlines() if f"--machine={spec.name}-" in line]
    return found


@needs_root
def test_an_unmarked_test_that_creates_a_bridge_or_boots_fails_and_nothing_is_made(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    name = f"rgd{uuid.uuid4().hex[:8]}"  # rb-rgdXXXXXXXX: 14 characters, a bridge name nobody else has
    # Its own state dir: the default one is the user's cloud's (down() below removes its state dir).
    spec = CloudSpec(
        name=name, workers=1, subnet=_free_subnet(), s3_port=_free_port(), state_dir=str(tmp_path / "st")
    )
    reached = tmp_path / "reached-s3-start"
    _inner(
        pytester,
        test_makers=MAKER_TESTS.format(name=name, subnet=spec.subnet, port=spec.s3_port, reached=reached),
    )
    try:
        result = _run(pytester)
        out = result.stdout.str()
        assert _what_exists(spec) == [], out
        assert not reached.exists(), f"up() went past the bridge (it existed: {reached.read_text()}):\n{out}"
        result.assert_outcomes(failed=3, errors=1)
        for test, (function, does) in [
            ("test_up", BRIDGE),
            ("test_bridge", BRIDGE),
            ("test_boot", BOOT),
            ("test_session_fixture", BRIDGE),
        ]:
            sentence = CALL_SENTENCE.format(test=f"test_makers.py::{test}", function=function, does=does)
            assert sentence in result.outlines, f"{test}: no sentence naming it in\n{out}"
    finally:
        if _what_exists(spec):  # only when the guard failed: everything of this one cloud, by its name
            LocalCloud(spec).down(quiet=True)
