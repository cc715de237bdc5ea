"""Publishing a partition: never a moment without one, a kill at any step leaves a readable
partition, and the next writer sweeps what a killed writer left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecat_tasks import storage
from ecat_tasks.storage import MANIFEST, Layout, atomic_dir, sweep_leftovers, write_manifest

DS = "2026-03-01"


class Killed(BaseException):
    """What a SIGKILL between two steps looks like to the code after it: nothing runs."""


def _write(final: Path, value: str) -> None:
    with atomic_dir(final) as tmp:
        (tmp / "data.txt").write_text(value)
        write_manifest(tmp, "test", DS, value=value)


def _read(final: Path) -> str:
    assert (final / MANIFEST).is_file(), f"no partition at {final}: {sorted(p.name for p in final.parent.iterdir())}"
    return (final / "data.txt").read_text()


def _steps(monkeypatch: pytest.MonkeyPatch, final: Path, kill_at: int | None) -> list[str]:
    """Wrap the filesystem steps of a publish: before each, a reader must find a partition."""
    calls: list[str] = []
    real = {"replace": os.replace, "symlink": os.symlink, "_exchange": storage._exchange, "_remove": storage._remove}

    def step(name: str):
        def wrapped(*args, **kwargs):
            if final.parent.is_dir() and any(final.parent.glob("ds=*")):
                _read(final)  # a concurrent reader at this instant
            if kill_at is not None and len(calls) == kill_at:
                raise Killed(name)
            calls.append(name)
            return real[name](*args, **kwargs)
        return wrapped

    monkeypatch.setattr(storage.os, "replace", step("replace"))
    monkeypatch.setattr(storage.os, "symlink", step("symlink"))
    monkeypatch.setattr(storage, "_exchange", step("_exchange"))
    monkeypatch.setattr(storage, "_remove", step("_remove"))  # removing the previous version
    return calls


def test_rewrite_is_never_without_a_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = Layout(tmp_path).partition("models/teacher", DS)
    _write(final, "v1")
    calls = _steps(monkeypatch, final, kill_at=None)
    _write(final, "v2")
    assert calls, "publishing took no filesystem step"
    assert _read(final) == "v2"
    monkeypatch.undo()
    names = sorted(p.name for p in final.parent.iterdir())
    assert names[-1] == f"ds={DS}" and len(names) == 2 and names[0].startswith(".v-"), names  # old version removed


@pytest.mark.parametrize("kill_at", [0, 1, 2, 3])
def test_a_kill_between_any_two_steps_leaves_a_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         kill_at: int) -> None:
    final = Layout(tmp_path).partition("lake/source", DS)
    _write(final, "good")
    _steps(monkeypatch, final, kill_at=kill_at)
    with pytest.raises(Killed):
        _write(final, "new")
    monkeypatch.undo()
    assert _read(final) in ("good", "new")  # the old partition or the complete new one, never none
    # the next writer of the partition sweeps every leftover of the killed one
    _write(final, "retry")
    assert _read(final) == "retry"
    names = sorted(p.name for p in final.parent.iterdir())
    assert len(names) == 2 and names[0] == os.readlink(final), names
    assert Layout(tmp_path).existing_days("lake/source") == [DS]


@pytest.mark.parametrize("exchange", [True, False])
def test_a_plain_directory_from_before_versioning_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              exchange: bool) -> None:
    final = Layout(tmp_path).partition("reports", DS)
    final.mkdir(parents=True)
    (final / "data.txt").write_text("legacy")
    write_manifest(final, "test", DS)
    if not exchange:  # a platform without renameat2: the fallback keeps working
        monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    _write(final, "new")
    assert final.is_symlink() and _read(final) == "new"
    assert len(list(final.parent.iterdir())) == 2


def test_other_partitions_leftovers_wait_until_stale(tmp_path: Path) -> None:
    area = tmp_path / "models" / "student"
    area.mkdir(parents=True)
    busy = area / ".tmp-ds=2026-03-02-0123456789ab"  # another day's writer, maybe still at work
    busy.mkdir()
    old = area / ".old-ds=2026-02-01-deadbeef"  # the pre-versioning writer's leftover
    old.mkdir()
    os.utime(old, (1_000_000, 1_000_000))
    _write(area / f"ds={DS}", "x")
    assert busy.is_dir() and not old.exists()
    assert sweep_leftovers(area, stale_after_s=0) == [busy.name]
    assert _read(area / f"ds={DS}") == "x"  # a version a pointer names is never swept


def test_failed_block_publishes_nothing(tmp_path: Path) -> None:
    final = Layout(tmp_path).partition("selection/graph", DS)
    _write(final, "good")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "data.txt").write_text("half")
            raise RuntimeError("boom")
    assert _read(final) == "good" and len(list(final.parent.iterdir())) == 2
