"""Pack the project's Python package for the nodes into one reproducible tar file (controller side).

    python bundle_app.py SRC_DIR PACKAGE_NAME DEST_TAR SUBPACKAGE [SUBPACKAGE ...]

Takes SRC_DIR/__init__.py and every *.py under SRC_DIR/<SUBPACKAGE>/ (no caches, no other files),
stores them as PACKAGE_NAME/... with fixed owner, mode and mtime, so the same sources give the same
bytes on any controller: the nodes then compare one checksum instead of every file. DEST_TAR is only
rewritten when its content would change. Prints ``changed`` or ``unchanged``.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path


def members(src: Path, subpackages: list[str]) -> list[Path]:
    files = [src / "__init__.py"]
    for sub in subpackages:
        folder = src / sub
        if not (folder / "__init__.py").is_file():
            raise SystemExit(f"bundle_app: {folder} is not a Python package (no __init__.py)")
        files += [p for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def pack(src: Path, name: str, files: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = sorted({p.parent for p in files})
        for folder in folders:
            info = tarfile.TarInfo(f"{name}/{folder.relative_to(src)}".rstrip("/.") or name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{name}/{path.relative_to(src)}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def main(argv: list[str]) -> None:
    if len(argv) < 4:
        raise SystemExit(__doc__)
    src, name, dest, subpackages = Path(argv[0]), argv[1], Path(argv[2]), argv[3:]
    if not (src / "__init__.py").is_file():
        raise SystemExit(f"bundle_app: {src} is not a Python package (no __init__.py)")
    data = pack(src, name, members(src, subpackages))
    if dest.is_file() and dest.read_bytes() == data:
        print("unchanged")
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(dest)
    print("changed")


if __name__ == "__main__":
    main(sys.argv[1:])
