# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the engine did before, re-implemented for comparison (scenario f), and
the size of what a full clone sends (scenario r)."""

from __future__ import annotations

import os

from dirstorage_replica import durable, journal, storage, ustar


def apply_one_syncfs(st):
    """journal.apply_archive as it was before bb5a421: no flush until one
    syncfs at the end (the engine's batch thresholds raised out of reach)."""
    saved = durable.Durability.FLUSH_FILES, durable.Durability.FLUSH_BYTES
    durable.Durability.FLUSH_FILES = durable.Durability.FLUSH_BYTES = 1 << 62
    try:
        return journal.apply_archive(st)
    finally:
        durable.Durability.FLUSH_FILES, durable.Durability.FLUSH_BYTES = saved


def old_style_apply(st, tar_path):
    """What the original tool does (spec section 6, step 7): extract every
    member into HOME and fsync each file and its folder (and every folder it
    created).  Files are written exactly as journal.apply_archive writes them
    (write-once files in place, x.* and o….c through a temporary name and a
    rename), so the only difference measured is how durability is reached."""
    count = 0
    with open(tar_path, "rb") as f:
        for member in ustar.iter_members(f.read):
            parts = member.name.split("/")
            dst = os.path.join(st.home, *parts)
            parent = os.path.dirname(dst)
            if not os.path.isdir(parent):
                missing = []
                d = parent
                while not os.path.isdir(d):
                    missing.append(d)
                    d = os.path.dirname(d)
                os.makedirs(parent)
                for d in reversed(missing):
                    durable.fsync_path(os.path.dirname(d), directory=True)
            mutable = journal.is_mutable(storage.logical_name(st.format, "/".join(parts[1:])))
            target = dst + ".tmp" if mutable else dst
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                os.write(fd, member.data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if mutable:
                os.replace(target, dst)
            durable.fsync_path(parent, directory=True)
            count += 1
    os.replace(tar_path, st.sub("misc", "replica.previous"))
    durable.fsync_path(st.journal_dir, directory=True)
    durable.fsync_path(st.sub("misc"), directory=True)
    return count


def ustar_bytes(home):
    """The size of the archive a full clone of `home` sends: config/settings,
    config/identity and every storage file of A/, each a 512-byte header and
    its data padded to 512 bytes, then the two zero blocks."""
    def member(size):
        return 512 + -(-size // 512) * 512
    total = sum(member(os.path.getsize(os.path.join(home, "config", n))) for n in ("settings", "identity"))
    st = storage.Storage(home)
    for rel, name in st.iter_files("A"):
        if name is not None:
            total += member(os.path.getsize(os.path.join(st.a_dir, *rel.split("/"))))
    return total + 1024
