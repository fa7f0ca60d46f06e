"""Helpers for tests that work on real folder trees.

- ``FIXTURES_DIR``: where the golden archives ``tests/fixtures/<case>.tar.gz`` live.
- ``unpack_case(case, dest)``: extract one golden archive; returns ``dest/<case>``
  (holding ``master/``, ``replica/``, ``manifest.json``).
- ``tree_state(path)``: a snapshot of a tree, to assert "byte-for-byte unchanged".
- ``diff_states(before, after)`` / ``assert_tree_unchanged(path, before)``:
  readable differences between two snapshots.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from pathlib import Path

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"


def fixture_cases() -> list[str]:
    """Names of the golden cases shipped in tests/fixtures/."""
    return sorted(p.name[: -len(".tar.gz")] for p in FIXTURES_DIR.glob("*.tar.gz"))


def unpack_case(case: str, dest: os.PathLike | str) -> Path:
    """Extract ``tests/fixtures/<case>.tar.gz`` into ``dest`` and return ``dest/<case>``.

    Modes and mtimes are kept as in the archive (the ``tar`` extraction filter
    only drops setuid/setgid/sticky bits and refuses paths leaving ``dest``).
    """
    archive = FIXTURES_DIR / f"{case}.tar.gz"
    if not archive.is_file():
        raise FileNotFoundError(f"no fixture {archive} (known: {', '.join(fixture_cases())})")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(dest, filter="tar")
    folder = dest / case
    if not folder.is_dir():
        raise FileNotFoundError(f"{archive} did not unpack to a folder named {case}/")
    return folder


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_state(path: os.PathLike | str) -> dict[str, tuple[str, int, str | None]]:
    """Map every path below ``path`` (relative, '/'-separated) to ``(type, mode, digest)``.

    - type: ``"file"``, ``"dir"``, ``"symlink"`` or ``"other"`` (fifo, socket, device)
    - mode: permission bits (``stat.S_IMODE`` of ``lstat``)
    - digest: sha256 hex of the content for files, of the link target for
      symlinks (``os.readlink`` bytes), ``None`` for dirs and others.

    Symlinks are never followed. The root itself is not included. Two equal
    states mean the trees hold the same names, kinds, modes and bytes
    (timestamps and ownership are not compared).
    """
    root = os.fspath(path)
    if not os.path.isdir(root):
        raise NotADirectoryError(root)
    state: dict[str, tuple[str, int, str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(os.fsencode(full))
                state[rel] = ("symlink", mode, hashlib.sha256(target).hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", mode, None)
            elif stat.S_ISREG(st.st_mode):
                state[rel] = ("file", mode, _sha256_file(full))
            else:
                state[rel] = ("other", mode, None)
    return state


def diff_states(before: dict, after: dict, limit: int = 50) -> list[str]:
    """Human-readable differences between two ``tree_state`` results (empty if equal)."""
    lines = []
    for rel in sorted(before.keys() | after.keys()):
        a, b = before.get(rel), after.get(rel)
        if a == b:
            continue
        if a is None:
            lines.append(f"+ {rel} {b[0]} {b[1]:o}")
        elif b is None:
            lines.append(f"- {rel} {a[0]} {a[1]:o}")
        else:
            what = []
            if a[0] != b[0]:
                what.append(f"type {a[0]} -> {b[0]}")
            if a[1] != b[1]:
                what.append(f"mode {a[1]:o} -> {b[1]:o}")
            if a[2] != b[2]:
                what.append("content")
            lines.append(f"~ {rel}: {', '.join(what)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines


def assert_tree_unchanged(path: os.PathLike | str, before: dict) -> None:
    """Fail with a readable diff if the tree at ``path`` differs from ``before``."""
    diff = diff_states(before, tree_state(path))
    assert not diff, f"tree {path} changed:\n" + "\n".join(diff)
