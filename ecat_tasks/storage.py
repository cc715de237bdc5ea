"""Storage layout under ECAT_HOME, atomic partition writes and JSON manifests.

Every task writes into a temporary sibling directory and renames it into place only when
complete, so a crash, a kill or a failed validation leaves the previous partition intact.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

from ecat_tasks.config import REPO_ROOT, ecat_home

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"

# Which task writes which area: used to name the culprit when a partition is missing.
WRITERS = {
    "lake/source": "extract",
    "lake/target": "extract",
    "selection/graph": "graph_select",
    "selection/weights": "domain_reweight",
    "models/teacher": "teacher_refresh",
    "models/student": "student_distill",
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

    def lake(self, domain: str, ds: str) -> Path:
        return self.partition(f"lake/{domain}", ds)

    def model(self, name: str, ds: str) -> Path:
        area = f"models/{name}" if name in ("teacher", "student") else f"models/baselines/{name}"
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

    def require(self, path: Path) -> Path:
        """Return ``path`` if it holds a complete partition, else a named error."""
        if (path / MANIFEST).is_file():
            return path
        rel = path.relative_to(self.root).parent.as_posix() if path.is_relative_to(self.root) else str(path)
        writer = next((task for area, task in WRITERS.items() if rel.startswith(area)), "an upstream task")
        raise MissingPartitionError(
            f"missing partition {path} (no {MANIFEST}); it is written by task '{writer}': "
            f"run or clear '{writer}' for this ds first"
        )


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def clean_stale_tmp(parent: Path) -> None:
    """Remove leftovers of killed writers (``.tmp-*``) so they never accumulate."""
    if parent.is_dir():
        for p in parent.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


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
