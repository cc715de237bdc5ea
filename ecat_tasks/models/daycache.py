"""What several of a day's trainings compute alike, computed once and kept for that day.

The student and its ablations train on the same rows against the same frozen teacher: each
would find the candidates' positions in the source day (``select_ids``) and run the teacher
over every row for its distillation targets. The first to compute such a result puts it
here; the others read it back, byte for byte what they would have computed.

An entry's key is a digest of everything its value depends on: the source partition's
published version and the ids (positions), or the teacher's checkpoint checksum, device,
threads and the very values of the columns it reads (targets). A changed input is a new key,
never a stale hit, so nothing needs invalidating; a rerun of the day finds the same keys (or
recomputes and rewrites them identically). The cache holds one day (``cache/ds=<ds>/``): the
first entry written for a day drops every other day's partition, so disk use is one day's
entries, not a history. Entries are single ``.npz`` files renamed into place: a reader sees a
whole entry or none, and two writers of one key write the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from ecat_tasks.storage import Layout, code_version

log = logging.getLogger(__name__)

AREA = "cache"


def digest(*parts: Any) -> str:
    """SHA-256 over ``parts``: numpy arrays (with their dtype and shape) and anything else as its text."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype.str}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).data)
        else:
            text = str(part).encode()
            h.update(len(text).to_bytes(8, "little"))
            h.update(text)
    return h.hexdigest()


def column_values(frame: pd.DataFrame, columns: Iterable[str]) -> list[Any]:
    """Digest parts of ``frame``'s ``columns``: numbers as their bytes, other values by a 64-bit hash each."""
    parts: list[Any] = [len(frame)]
    for name in columns:
        values = frame[name].to_numpy()
        if values.dtype.kind not in "biuf":
            values = pd.util.hash_array(np.asarray(values, dtype=object), categorize=False)
        parts += [name, values]
    return parts


def string_values(ids: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Digest parts of a string column: its length, offsets, characters and nulls (no Python strings)."""
    ids = ids.cast(pa.large_string())
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    _, offsets_buf, data_buf = ids.buffers()
    if offsets_buf is None:  # an empty array may have none
        return [len(ids)]
    offsets = np.frombuffer(offsets_buf, np.int64, count=len(ids) + 1, offset=ids.offset * 8)
    data = np.frombuffer(data_buf, np.uint8)[offsets[0]:offsets[-1]] if data_buf is not None else np.zeros(0, np.uint8)
    nulls = ids.is_null().to_numpy(zero_copy_only=False) if ids.null_count else "no nulls"
    return [len(ids), offsets - offsets[0], data, nulls]


class DayCache:
    """Entries (named arrays) of one day's shared results, by kind and key (:meth:`key`)."""

    def __init__(self, layout: Layout, ds: str) -> None:
        self.layout, self.ds = layout, ds
        self.directory = layout.partition(AREA, ds)

    @staticmethod
    def key(*parts: Any) -> str:
        """The key of an entry whose value depends on ``parts`` (and on the code that computes it)."""
        return digest(code_version(), *parts)

    def _path(self, kind: str, key: str) -> Path:
        return self.directory / f"{kind}-{key}.npz"

    def get(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        """The entry's arrays, or None when no task of the day has put it."""
        path = self._path(kind, key)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except FileNotFoundError:
            return None
        except Exception as exc:  # unreadable (the disk, a hand edit): computed again, never trusted
            log.warning("day cache: %s unreadable (%s: %s); computing it again", path, type(exc).__name__, exc)
            return None
        log.info("day cache: %s %s... read (%s)", kind, key[:12], path)
        return arrays

    def put(self, kind: str, key: str, **arrays: np.ndarray) -> None:
        """Write the entry (atomically: a temporary file renamed into place)."""
        if not self.directory.is_dir():
            self._drop_other_days()
            self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(kind, key)
        tmp = self.directory / f".tmp-{path.name}-{uuid.uuid4().hex[:12]}.npz"
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("day cache: %s %s... written (%s)", kind, key[:12], path)

    def _drop_other_days(self) -> None:
        base = self.directory.parent
        if not base.is_dir():
            return
        for other in base.glob("ds=*"):
            if other != self.directory:
                shutil.rmtree(other, ignore_errors=True)
