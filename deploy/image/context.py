"""The container build's context: the files the image's /app is made from.

    python3 deploy/image/context.py list   # NUL-separated paths, relative to the repo
    python3 deploy/image/context.py hash   # one hash of every path and its content

Reads .containerignore (the same file `podman build` / `docker build` read): a pattern
leaves out the paths it matches and everything under them. Standard library only: this
runs before any virtualenv exists.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def patterns() -> list[str]:
    lines = (ROOT / ".containerignore").read_text().splitlines()
    return [line.strip().strip("/") for line in lines if line.strip() and line[0] != "#"]


def ignored(rel: str, pats: list[str]) -> bool:
    for pat in pats:
        if fnmatch.fnmatchcase(rel, pat):
            return True
        if pat.startswith("**/") and fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pat[3:]):
            return True
    return False


def files() -> list[str]:
    pats = patterns()
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        base = Path(dirpath).relative_to(ROOT).as_posix()
        prefix = "" if base == "." else base + "/"
        dirnames[:] = sorted(d for d in dirnames if not ignored(prefix + d, pats))
        found += [prefix + f for f in sorted(filenames) if not ignored(prefix + f, pats)]
    return found


def digest() -> str:
    h = hashlib.sha256()
    for rel in files():
        path = ROOT / rel
        h.update(rel.encode() + b"\0")
        h.update(oct(path.lstat().st_mode & 0o111).encode() + b"\0")
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        else:
            h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def main() -> int:
    if sys.argv[1:] == ["list"]:
        sys.stdout.write("".join(rel + "\0" for rel in files()))
    elif sys.argv[1:] == ["hash"]:
        print(digest())
    else:
        print("usage: context.py list|hash", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
