"""`rayops-local`: up, down, status of the local cloud (what `make local-up/-down/-status` run)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rayops.localcloud import image
from rayops.localcloud.cloud import LocalCloud
from rayops.localcloud.discovery import local_clouds
from rayops.localcloud.errors import LocalCloudError
from rayops.localcloud.state import (
    DEFAULT_NAME,
    DEFAULT_S3_PORT,
    DEFAULT_STATE_DIR,
    DEFAULT_SUBNET,
    CloudSpec,
    CloudState,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rayops-local", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--name", default=None, help=f"cloud name (default {DEFAULT_NAME})")
        sp.add_argument(
            "--state-dir",
            type=Path,
            default=DEFAULT_STATE_DIR,
            help=f"where the contract, key and state live (default {DEFAULT_STATE_DIR})",
        )

    up = sub.add_parser("up", help="boot the head, the workers and the S3 endpoint")
    common(up)
    up.add_argument("--workers", type=int, default=2, help="number of worker machines (default 2)")
    up.add_argument("--subnet", default=DEFAULT_SUBNET, help=f"bridge subnet (default {DEFAULT_SUBNET})")
    up.add_argument(
        "--s3-port", type=int, default=DEFAULT_S3_PORT, help=f"S3 port (default {DEFAULT_S3_PORT})"
    )
    up.add_argument(
        "--release",
        default=image.DEFAULT_RELEASE,
        help="Debian release of the machines: "
        + ", ".join(f"{name} ({what})" for name, what in image.RELEASES.items())
        + f"; default {image.DEFAULT_RELEASE}",
    )
    for name, helptext in (
        ("down", "remove every machine, mount, bridge, NAT rule and the S3 server"),
        ("status", "show machines, IPs, state, memory, S3 endpoint, contract path"),
    ):
        sp = sub.add_parser(name, help=helptext)
        common(sp)
        if name == "status":
            sp.add_argument("--json", action="store_true", help="print JSON")
        else:
            sp.add_argument(
                "--all",
                action="store_true",
                help="remove every local cloud on this host (see `list`), e.g. after a killed test run",
            )
    sub.add_parser(
        "list", help="name every local cloud on this host (found by its folder or its rb-<name> bridge)"
    )
    for name, helptext in (
        ("stop-machine", "power one machine off, keeping its disk"),
        ("start-machine", "boot a stopped machine again"),
    ):
        sp = sub.add_parser(name, help=helptext)
        common(sp)
        sp.add_argument("machine")
    return p


def _cloud(args: argparse.Namespace) -> LocalCloud:
    """The cloud named on the command line, or the one recorded in the state dir."""
    if args.command == "up":
        spec = CloudSpec(
            name=args.name or DEFAULT_NAME,
            workers=args.workers,
            subnet=args.subnet,
            s3_port=args.s3_port,
            state_dir=str(args.state_dir),
            release=args.release,
        )
        return LocalCloud(spec)
    return _existing_cloud(args.name, args.state_dir)


def _existing_cloud(
    name: str | None, state_dir: Path, found: dict[str, str | None] | None = None
) -> LocalCloud:
    """The cloud in the state dir when it is the one named; else the one `local_clouds` finds by name."""
    state = CloudState.load(state_dir)
    if state is not None and name in (None, state.spec.name):
        return LocalCloud(state.spec)
    name = name or DEFAULT_NAME
    # No state file for it here: its subnet is the one its bridge carries, if it still has one. Without
    # a bridge the spec's subnet is a placeholder that `down` never acts on (it acts on names and on
    # what the host proves).
    subnet = (local_clouds() if found is None else found).get(name) or DEFAULT_SUBNET
    return LocalCloud(CloudSpec(name=name, subnet=subnet, state_dir=str(state_dir)))


def _down_all(state_dir: Path) -> None:
    clouds = local_clouds()
    if not clouds:
        print("[rayops-local] no local cloud on this host; nothing to do", flush=True)
    for name in clouds:
        _existing_cloud(name, state_dir, clouds).down()


def _print_status(status: dict[str, object]) -> None:
    print(f"cloud      {status['name']} ({'up' if status['up'] else 'down'}, Debian {status['release']})")
    machines = status["machines"]
    assert isinstance(machines, list)
    if status["up"]:
        print(f"{'machine':<22} {'role':<7} {'ip':<15} {'state':<12} memory")
        for row in machines:
            print(
                f"{row['name']:<22} {row['role']:<7} {row['ip']:<15} {row['state']:<12} "
                f"{row['memory_mib']} MiB"
            )
    print(f"s3         {status['s3_endpoint_url'] or '-'}")
    print(f"contract   {status['contract'] or '-'}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            for name, subnet in local_clouds().items():
                print(f"{name:<14} {subnet or '- (bridge gone)'}")
            return 0
        if args.command == "down" and args.all:
            if args.name is not None:
                raise LocalCloudError("`down --all` removes every cloud: leave out --name, or --all")
            _down_all(args.state_dir)
            return 0
        cloud = _cloud(args)
        if args.command == "up":
            cloud.up()
            _print_status(cloud.status())
        elif args.command == "down":
            cloud.down()
        elif args.command == "status":
            status = cloud.status()
            print(json.dumps(status, indent=2)) if args.json else _print_status(status)
        elif args.command == "stop-machine":
            cloud.stop_machine(args.machine)
        elif args.command == "start-machine":
            cloud.start_machine(args.machine)
    except LocalCloudError as err:
        print(f"rayops-local: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rayops-local: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
