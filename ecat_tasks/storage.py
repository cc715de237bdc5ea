"""Storage layout under ECAT_HOME, atomic partition writes and JSON manifests.

Every task writes into a temporary sibling directory; when it is complete it becomes a
versioned directory and the partition's pointer (``ds=D``, a symlink) is swapped onto it by
one rename. A crash, a kill or a failed validation leaves the previous partition intact, and
there is never a moment without one.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from ecat_tasks.config import REPO_ROOT, ecat_home

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"

# Which task writes which area: used to name the culprit when a partition is missing.
WRITERS = {
    "lake": "extract",
    "staging": "extract",
    "selection/graph": "graph_select",
    "selection/weights": "domain_reweight",
    "models/teacher": "teacher_refresh",
    "models/student": "student_distill",
    "models/served": "guard",
    "models/baselines": "train_baselines",
    "reports": "evaluate",
}


class MissingPartitionError(FileNotFoundError):
    """An upstream partition is absent: names the path and the task that should write it."""


def parse_ds(ds: str) -> dt.date:
    try:
        return dt.date.fromisoformat(ds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ds must be an ISO date YYYY-MM-DD, got {ds!r}") from exc


def shift_ds(ds: str, days: int) -> str:
    return (parse_ds(ds) + dt.timedelta(days=days)).isoformat()


class Layout:
    """Paths of every artifact, by area and ``ds``."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else ecat_home()

    def partition(self, area: str, ds: str) -> Path:
        parse_ds(ds)
        return self.root / area / f"ds={ds}"

    def lake_day(self, ds: str) -> Path:
        """A validated day: ``source/`` and ``target/`` behind one pointer, published together by validate."""
        return self.partition("lake", ds)

    def lake(self, domain: str, ds: str) -> Path:
        return self.lake_day(ds) / domain

    def staging_day(self, ds: str) -> Path:
        """An extracted day waiting for validation; no reader but validate looks here."""
        return self.partition("staging", ds)

    def staging(self, domain: str, ds: str) -> Path:
        return self.staging_day(ds) / domain

    def lake_has(self, ds: str) -> bool:
        """Whether ``ds`` is published (validated) in the lake, both domains."""
        return all((self.lake(d, ds) / MANIFEST).is_file() for d in ("source", "target"))

    def model(self, name: str, ds: str) -> Path:
        area = f"models/{name}" if name in ("teacher", "student", "served") else f"models/baselines/{name}"
        return self.partition(area, ds)

    def report(self, ds: str) -> Path:
        return self.partition("reports", ds)

    def existing_days(self, area: str) -> list[str]:
        base = self.root / area
        if not base.is_dir():
            return []
        days = [p.name[3:] for p in base.glob("ds=*") if (p / MANIFEST).is_file()]
        return sorted(days)

    def latest_before(self, area: str, ds: str) -> str | None:
        """Newest complete partition of ``area`` dated strictly before ``ds``."""
        earlier = [d for d in self.existing_days(area) if d < ds]
        return earlier[-1] if earlier else None

    def latest_on_or_before(self, area: str, ds: str) -> str | None:
        """Newest complete partition of ``area`` dated ``ds`` or earlier."""
        days = [d for d in self.existing_days(area) if d <= ds]
        return days[-1] if days else None

    def require(self, path: Path) -> Path:
        """Return ``path`` if it holds a complete partition, else a named error."""
        if (path / MANIFEST).is_file():
            return path
        rel = path.relative_to(self.root).parent.as_posix() if path.is_relative_to(self.root) else str(path)
        writer = next((task for area, task in WRITERS.items() if rel.startswith(area)), "an upstream task")
        published = " and published by 'validate' once the day passes validation" if rel.startswith("lake") else ""
        raise MissingPartitionError(
            f"missing partition {path} (no {MANIFEST}); it is written by task '{writer}'{published}: "
            f"run or clear '{writer}' for this ds first"
        )


# Leftovers of killed writers: ".tmp-<name>-<id>" (being written), ".v-<name>-<id>" (a
# version no pointer names), ".lnk-<name>-<id>" (a pointer not yet swapped in), ".old-<name>-<id>"
# (the pre-versioning writer's previous partition).
_LEFTOVER = re.compile(r"^\.(tmp|v|lnk|old)-(?P<name>.+)-(?P<id>[0-9a-f]{8,32})$")
# Another partition's leftovers may belong to a writer still at work: swept only when older.
STALE_AFTER_S = 6 * 3600


def _uid() -> str:
    return uuid.uuid4().hex[:12]


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    func = getattr(_LIBC, "renameat2", None) if _LIBC is not None else None
    if func is None:
        return False
    if func(-100, os.fsencode(str(a)), -100, os.fsencode(str(b)), 2) == 0:  # AT_FDCWD, RENAME_EXCHANGE
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # not a glibc/musl platform
    _LIBC = None


def publish_dir(complete: Path, final: Path) -> None:
    """Make the finished directory ``complete`` the partition ``final``, with no moment without one.

    ``final`` is a symlink to a versioned sibling ``.v-<name>-<id>``; publishing renames the new
    version into place, then swaps the pointer by ``rename`` (atomic), then removes the previous
    version. A kill between any two steps leaves either the old or the new partition readable;
    what it leaves behind is swept by the next writer of the partition.
    """
    parent = final.parent
    version = parent / f".v-{final.name}-{_uid()}"
    os.replace(complete, version)
    link = parent / f".lnk-{final.name}-{_uid()}"
    os.symlink(version.name, link)
    if final.is_symlink() or not final.exists():
        previous = parent / os.readlink(final) if final.is_symlink() else None
        os.replace(link, final)
    elif _exchange(link, final):  # a plain directory from before versioning: swapped atomically
        previous = link  # now the old directory
    else:  # no atomic exchange on this platform: the one (microseconds) gap, once per partition
        previous = parent / f".old-{final.name}-{_uid()}"
        os.replace(final, previous)
        os.replace(link, final)
    if previous is not None and previous.name != version.name:
        _remove(previous)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def sweep_leftovers(parent: Path, name: str | None = None, stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Remove killed writers' leftovers under ``parent``; returns what was removed.

    Leftovers of partition ``name`` go at once (its writer is the caller); those of other
    partitions only when older than ``stale_after_s``. A version a pointer names is never removed.
    """
    if not parent.is_dir():
        return []
    referenced = {os.readlink(p) for p in parent.iterdir() if p.is_symlink() and not p.name.startswith(".")}
    now = time.time()
    removed = []
    for p in parent.iterdir():
        m = _LEFTOVER.match(p.name)
        if m is None or p.name in referenced:
            continue
        if m["name"] != name:
            try:
                if now - p.lstat().st_mtime < stale_after_s:
                    continue
            except FileNotFoundError:
                continue
        _remove(p)
        removed.append(p.name)
    if removed:
        log.info("swept %d leftover(s) of killed writers under %s: %s", len(removed), parent, sorted(removed))
    return removed


def drop_partition(final: Path) -> None:
    """Remove a published partition (pointer first, so readers never see half of it)."""
    if final.is_symlink():
        target = final.parent / os.readlink(final)
        final.unlink()
        _remove(target)
    elif final.exists():
        _remove(final)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` (see :func:`publish_dir`) only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(final.parent, final.name)
    tmp = final.parent / f".tmp-{final.name}-{_uid()}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, final)


def publish_staged(layout: Layout, ds: str) -> Path:
    """Publish the staged day ``ds`` (both domains under one pointer) into the lake, then drop the staging.

    Files are hard-linked (copied where links are impossible): staging stays intact until the
    lake's pointer is swapped, so a kill at any moment leaves a day that a retry can publish.
    """
    staged = layout.require(layout.staging("target", ds)).parent
    layout.require(layout.staging("source", ds))
    final = layout.lake_day(ds)
    with atomic_dir(final) as tmp:
        for domain in ("target", "source"):
            shutil.copytree(staged / domain, tmp / domain, copy_function=_link_or_copy)
    drop_partition(layout.staging_day(ds))
    return final


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def clean_stale_tmp(parent: Path) -> None:
    """Sweep leftovers of killed writers of other partitions of an area (see :func:`sweep_leftovers`)."""
    sweep_leftovers(parent)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_checksum(path: Path) -> str:
    """SHA-256 over the files of a partition (names and contents), manifest excluded."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


_CODE_VERSION: str | None = None


def code_version() -> str:
    """Git commit of the code that wrote an artifact ("unknown" outside a checkout)."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        try:
            out = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True, timeout=5, check=True,
            )
            _CODE_VERSION = out.stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            _CODE_VERSION = "unknown"
    return _CODE_VERSION


def write_manifest(directory: Path, task: str, ds: str, **fields: Any) -> dict[str, Any]:
    """Write ``_manifest.json`` (task, ds, code version, checksum and the given fields)."""
    manifest = {
        "task": task,
        "ds": ds,
        "code_version": code_version(),
        "checksum": dir_checksum(directory),
        **fields,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / MANIFEST).read_text())
