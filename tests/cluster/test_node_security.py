"""Nobody in (issue 15, items 1 and 2) on the session cluster: root runs nothing the Ray user can change,
Ray's files are the Ray user's alone, only root and the service users reach the metadata service, JupyterLab
opens no terminal. Every check is a real attempt on the nodes (as `ray`, as an unrelated local user, as root).

Cost on the session cluster: ~25 s (one Ray job, ~10 s; a few ssh round trips per node).
"""

from __future__ import annotations

import re
import shlex
import uuid

import pytest
from cluster_helpers import VENV, RayCluster

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]

APP = "/opt/rayops/app"
# rayops_ray_private_dir (0700, the Ray user's) and Ray's temp dir inside it.
PRIVATE = "/var/lib/ray/private"
OTHER_USER = "nobody"  # an unrelated local account: not ray, not root, no sudo
METADATA_IP = "169.254.169.254"


def _nodes(cluster: RayCluster) -> list[str]:
    return [cluster.head, *cluster.workers]


def _as(user: str, command: str) -> str:
    return f"runuser -u {user} -- bash -c {shlex.quote(command)}"


# --- the venv and the code: root's, read-only for the Ray user -------------------------------------------


def test_the_venv_and_the_code_are_roots_and_nobody_elses_to_write(ray_cluster: RayCluster) -> None:
    foreign = "'(' '!' -user root -o '!' -group root -o -perm /go=w ')' '!' -type l"
    find = f"find {VENV} {APP} {foreign} -print | head -5"
    for node in _nodes(ray_cluster):
        out = ray_cluster.ssh(node, find)
        assert out.returncode == 0 and out.stdout.strip() == "", f"{node}: not root's alone:\n{out.stdout}"


def test_the_ray_user_cannot_write_into_the_venv_or_the_code(ray_cluster: RayCluster) -> None:
    """What a Ray job or a notebook cell would do to become root at the next site.yml: a .pth file."""
    attempts = [
        f"touch $(echo {VENV}/lib/python3*/site-packages)/rayops-evil.pth",
        f"touch {VENV}/bin/rayops-evil",
        f"touch {APP}/rayops/rayops-evil.py",
        f"mkdir $(echo {VENV}/lib/python3*/site-packages)/ray/__pycache__/rayops-evil",
    ]
    for node in _nodes(ray_cluster):
        for attempt in attempts:
            out = ray_cluster.ssh(node, _as("ray", attempt))
            assert out.returncode != 0, f"{node}: as ray, `{attempt}` worked"
            assert "Permission denied" in out.stderr, f"{node}: {attempt}: {out.stderr}"
        left = ray_cluster.ssh(node, f"find {VENV} {APP} -name 'rayops-evil*' | wc -l")
        assert left.stdout.strip() == "0", node


def test_the_venv_holds_compiled_byte_code(ray_cluster: RayCluster) -> None:
    """Python cannot write byte code into a read-only venv: the install compiled it (compile_bytecode).

    Every module of Ray and of the package has its .pyc, not only the ones something imported: a root
    process importing ray (which may write byte code) leaves most of Ray's 2,500 modules uncompiled, so this
    tells the install's compileall apart from byte code written at run time."""
    count = (
        "import pathlib, importlib.util, sys\n"
        "for root in sys.argv[1:]:\n"
        "    sources = list(pathlib.Path(root).rglob('*.py'))\n"
        "    cached = [pathlib.Path(importlib.util.cache_from_source(p)) for p in sources]\n"
        "    missing = [p for p, c in zip(sources, cached) if not c.exists()]\n"
        "    print(root, len(sources), len(missing), *missing[:3])\n"
    )
    for node in (ray_cluster.head, ray_cluster.workers[0]):
        out = ray_cluster.ssh(
            node,
            f"cd / && {VENV}/bin/python -I -B -c {shlex.quote(count)} "
            f"$(echo {VENV}/lib/python3*/site-packages/ray) {APP}/rayops/workflow",
        )
        assert out.returncode == 0, out.stdout + out.stderr
        rows = [line.split() for line in out.stdout.splitlines()]
        assert len(rows) == 2, out.stdout
        for root, sources, missing, *examples in rows:
            assert int(sources) > 0 and int(missing) == 0, (
                f"{node}: {root}: {missing} of {sources} uncompiled {examples}"
            )


# --- Ray's files: the Ray user's alone --------------------------------------------------------------------


def test_another_local_user_cannot_read_a_jobs_logs(ray_cluster: RayCluster) -> None:
    job = f"rsec-logs-{uuid.uuid4().hex[:8]}"
    marker = f"secret-{uuid.uuid4().hex}"
    submit = ray_cluster.ssh(
        ray_cluster.head,
        f"timeout 120 /usr/local/bin/ray job submit --submission-id {job} -- echo {marker}",
        timeout=180,
    )
    assert submit.returncode == 0 and marker in submit.stdout, submit.stdout[-2000:] + submit.stderr[-2000:]
    found = ray_cluster.ssh(ray_cluster.head, f"find / -xdev -name 'job-driver-{job}.log' 2>/dev/null")
    logs = found.stdout.split()
    assert len(logs) == 1, found.stdout
    assert logs[0].startswith(f"{PRIVATE}/"), f"the job's log is at {logs[0]}, outside the Ray user's folder"
    assert marker in ray_cluster.ssh(ray_cluster.head, f"cat {logs[0]}").stdout
    for attempt in (f"cat {logs[0]}", f"ls {PRIVATE}", f"ls {logs[0].rsplit('/', 1)[0]}"):
        out = ray_cluster.ssh(ray_cluster.head, _as(OTHER_USER, attempt))
        assert out.returncode != 0 and marker not in out.stdout, f"as {OTHER_USER}: {attempt}: {out.stdout}"
        assert "Permission denied" in out.stderr, out.stderr
    # No Ray session of this cluster in a /tmp (Ray makes its folders 0777 there): neither the node's nor the
    # private /tmp systemd gives each hardened unit (PrivateTmp), which is where a Ray that ignored --temp-dir
    # would have put it; root's own /tmp alone could never show that.
    for node in _nodes(ray_cluster):
        mode = ray_cluster.ssh(
            node,
            f"stat -c '%a %U' {PRIVATE}; "
            "ls -d /tmp/ray/session_* /tmp/systemd-private-*/tmp/ray/session_* /var/tmp/ray/session_* "
            "2>/dev/null | wc -l",
        )
        assert mode.stdout.split() == ["700", "ray", "0"], f"{node}: {mode.stdout}"


# --- the instance metadata service: root and the service users only ---------------------------------------


def _refused_count(cluster: RayCluster, node: str) -> int:
    out = cluster.ssh(node, "nft list chain inet rayops output")
    assert out.returncode == 0, out.stderr
    match = re.search(r"ip daddr .*? counter packets (\d+) bytes \d+ reject", out.stdout)
    assert match, out.stdout
    return int(match.group(1))


def _connects(cluster: RayCluster, node: str, user: str) -> str:
    code = (
        "import socket\n"
        "s = socket.socket(); s.settimeout(5)\n"
        "try:\n"
        f"    s.connect(({METADATA_IP!r}, 80)); print('OPEN')\n"
        "except OSError as e:\n"
        "    print('ERR', type(e).__name__)\n"
    )
    return cluster.ssh(node, _as(user, f"python3 -c {shlex.quote(code)}")).stdout.strip()


def test_only_root_and_ray_reach_the_metadata_service(ray_cluster: RayCluster) -> None:
    """The address lives on the node's loopback for the test (the local cloud has no metadata service), with a
    listener behind it: no packet leaves the machine. The output rule refuses the unrelated user's connect
    (its counter counts it) and lets root's and ray's through."""
    node = ray_cluster.workers[0]
    setup = ray_cluster.ssh(
        node,
        f"ip addr add {METADATA_IP}/32 dev lo && (timeout 60 python3 -m http.server --bind {METADATA_IP} 80 "
        ">/dev/null 2>&1 & echo $! > /run/rayops-imds-test.pid) && sleep 1",
    )
    assert setup.returncode == 0, setup.stderr
    try:
        before = _refused_count(ray_cluster, node)
        assert _connects(ray_cluster, node, OTHER_USER) == "ERR ConnectionRefusedError"
        after = _refused_count(ray_cluster, node)
        assert after > before, (before, after)
        assert _connects(ray_cluster, node, "root") == "OPEN"
        assert _connects(ray_cluster, node, "ray") == "OPEN"
        assert _refused_count(ray_cluster, node) == after, "root's or ray's connect was refused"
    finally:
        pid = "/run/rayops-imds-test.pid"
        ray_cluster.ssh(node, f"kill $(cat {pid}); rm -f {pid}; ip addr del {METADATA_IP}/32 dev lo")


# --- JupyterLab: no terminals ------------------------------------------------------------------------------


def test_jupyterlab_opens_no_terminal(ray_cluster: RayCluster) -> None:
    token = ray_cluster.secret("jupyter_token")
    code = (
        "import sys, urllib.request, urllib.error\n"
        "base, auth = 'http://127.0.0.1:8888/api/', {'Authorization': 'token ' + sys.argv[1]}\n"
        "for method, path in (('POST', 'terminals'), ('GET', 'terminals'), ('GET', 'kernelspecs')):\n"
        "    data = b'' if method == 'POST' else None\n"
        "    r = urllib.request.Request(base + path, method=method, data=data, headers=auth)\n"
        "    try:\n"
        "        print(method, path, urllib.request.urlopen(r, timeout=20).status)\n"
        "    except urllib.error.HTTPError as e:\n"
        "        print(method, path, e.code)\n"
    )
    out = ray_cluster.ssh(ray_cluster.head, f"python3 -c {shlex.quote(code)} {shlex.quote(token)}")
    assert out.returncode == 0, out.stderr
    # The token works (kernelspecs answer), the terminals API does not exist.
    assert out.stdout.splitlines() == ["POST terminals 404", "GET terminals 404", "GET kernelspecs 200"], (
        out.stdout
    )
