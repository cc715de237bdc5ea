"""The lake stream: every row once per epoch through a bounded buffer, parts interleaved,
the batch order fixed by the seed, and selections by id with their weights."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ecat_tasks.models.data import Batchable
from ecat_tasks.models.stream import LakeStream, Part, select_ids


def _lake(tmp_path, name: str, ids: np.ndarray, row_group: int):
    out = tmp_path / name
    out.mkdir()
    table = pa.table({"sample_id": [f"s{i:07d}" for i in ids], "x": ids.astype(np.int64)})
    pq.write_table(table, out / "part-00000.parquet", row_group_size=row_group)
    return out


def _encode(frame, weight, const):
    x = torch.from_numpy(frame["x"].to_numpy())
    extra = {k: torch.from_numpy(v) for k, v in const.items()}
    return Batchable(x[:, None], torch.zeros(len(x), 1), x.float(), torch.from_numpy(weight), extra)


def _epoch(stream: LakeStream, seed: int, batch: int = 100) -> list[torch.Tensor]:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return [b for b in stream.batches(batch, gen)]


def test_bounded_buffer_sees_every_row_once_and_mixes_parts(tmp_path) -> None:
    big = _lake(tmp_path, "source", np.arange(0, 600_000), row_group=100_000)
    small = _lake(tmp_path, "target", np.arange(1_000_000, 1_030_000), row_group=30_000)
    parts = [Part(paths=(big,), const={"domain": 0.0}), Part(paths=(small,), const={"domain": 1.0})]
    stream = LakeStream(parts, ["x"], _encode, buffer_rows=65_536)
    assert not stream._fits_in_buffer() and len(stream) == 630_000
    batches = _epoch(stream, 1)
    seen = torch.cat([b.sparse[:, 0] for b in batches])
    assert sorted(seen.tolist()) == list(range(600_000)) + list(range(1_000_000, 1_030_000))  # each row once
    dom = torch.cat([b.extra["domain"] for b in batches])
    assert torch.equal(dom, (seen >= 1_000_000).float())  # constants travel with their rows
    # the small part (4.8% of rows) is spread over the epoch, not bunched into one block
    tenths = [dom[i * 63_000:(i + 1) * 63_000].mean().item() for i in range(10)]
    assert all(0.03 < t < 0.07 for t in tenths), tenths
    # the same seed gives the same batches; another seed another order
    again = torch.cat([b.sparse[:, 0] for b in _epoch(stream, 1)])
    other = torch.cat([b.sparse[:, 0] for b in _epoch(stream, 2)])
    assert torch.equal(seen, again) and not torch.equal(seen, other)


def test_select_ids_keeps_those_rows_with_their_weights(tmp_path) -> None:
    big = _lake(tmp_path, "source", np.arange(0, 50_000), row_group=7_000)
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(50_000, 5_000, replace=False))
    weight = rng.uniform(0.2, 5.0, len(chosen)).astype(np.float32)
    ids = pa.array([f"s{i:07d}" for i in chosen[::-1]])  # any order: matched by id
    part = select_ids(Part(paths=(big,)), ids, weight[::-1].copy())
    stream = LakeStream([part], ["x"], _encode, buffer_rows=2_048)
    rows = torch.cat([b.sparse[:, 0] for b in _epoch(stream, 3)])
    w = torch.cat([b.weight for b in _epoch(stream, 3)])
    assert sorted(rows.tolist()) == chosen.tolist()
    lookup = dict(zip(chosen.tolist(), weight.tolist()))
    assert np.allclose(w.numpy(), [lookup[int(r)] for r in rows])


def test_stream_holds_at_most_the_training_block_and_the_next(tmp_path, monkeypatch) -> None:
    """Memory is bounded in blocks: while a block trains, the only other blocks alive are the
    next one being encoded and shuffled (not also a finished one queued, nor the unshuffled copy)."""
    import time
    import weakref

    from ecat_tasks.models import stream as stream_module

    alive: set[int] = set()

    def track(block: Batchable) -> Batchable:
        key = id(block.sparse)
        alive.add(key)
        weakref.finalize(block.sparse, alive.discard, key)  # slices of a block keep it alive
        return block

    permuted = stream_module._permuted
    monkeypatch.setattr(stream_module, "_permuted", lambda *a: track(permuted(*a)))
    lake = _lake(tmp_path, "source", np.arange(0, 60_000), row_group=5_000)
    stream = LakeStream([Part(paths=(lake,))], ["x"], lambda *a: track(_encode(*a)), buffer_rows=5_000)
    gen = torch.Generator()
    gen.manual_seed(0)
    most, rows = 0, []
    for batch in stream.batches(900, gen):  # 900: each block also takes the rows the last one left over
        time.sleep(0.02)  # a slow consumer: the producer gets every chance to run ahead
        most = max(most, len(alive))
        rows.append(batch.sparse[:, 0].clone())  # a view would keep its block alive
    assert sorted(torch.cat(rows).tolist()) == list(range(60_000))
    assert 2 <= most <= 3, most  # this block, and the next encoded plus its shuffled copy


def test_select_ids_confirms_hash_hits_on_the_id(tmp_path, monkeypatch) -> None:
    """Ids are looked up by hash, slice by slice; a row whose id only shares a hash with a
    wanted id is not selected, and wanted ids sharing a hash (or repeated) still select exactly."""
    from ecat_tasks.models import stream as stream_module

    def weak(ids: pa.Array) -> np.ndarray:  # 1,000 buckets: most rows of the lake collide with a wanted id
        return np.array([int(s[1:]) % 1_000 for s in ids.to_pylist()], np.uint64)

    monkeypatch.setattr(stream_module, "_id_hashes", weak)
    lake = _lake(tmp_path, "source", np.arange(0, 20_000), row_group=3_000)
    chosen = np.arange(5, 20_000, 1_003)[:20]  # distinct buckets
    weight = np.arange(len(chosen), dtype=np.float32)
    part = select_ids(Part(paths=(lake,)), pa.array([f"s{i:07d}" for i in chosen]), weight)
    assert part.rows.tolist() == chosen.tolist() and part.row_weight.tolist() == weight.tolist()
    clash = np.array([5, 1_005, 7])  # 5 and 1,005 share a bucket: the exact lookup over the column
    part = select_ids(Part(paths=(lake,)), pa.array([f"s{i:07d}" for i in clash]), np.array([1, 2, 3], np.float32))
    assert part.rows.tolist() == [5, 7, 1_005] and part.row_weight.tolist() == [1.0, 3.0, 2.0]
