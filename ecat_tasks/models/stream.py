"""Training data streamed from the lake: Parquet record batches into torch, memory flat in rows.

A :class:`LakeStream` is a list of :class:`Part` s (lake partitions or a small in-memory
table, each with an optional row filter, per-row weight and constant extra columns). Each
epoch it reads the parts' row groups through pyarrow's dataset scanner in a seeded order,
interleaves their slices in proportion to their sizes (so a small target part is spread over
the whole epoch, not bunched in one block), encodes them, and shuffles within a bounded
buffer of ``buffer_rows`` rows before cutting mini-batches. Memory is two encoded blocks
(the one training, and the next, read, encoded and shuffled in a background thread while it
trains) plus one row group per part, whatever the day's size. An encoded block's bytes are
``buffer_rows`` times an encoded row's, which distillation makes several times a plain row's
(the teacher's hidden vector: about 350 bytes a row, 350 MB a block at the default).

When every row fits in one buffer the stream encodes once and only reshuffles per epoch,
which is the old in-memory behaviour at the old speed.

Determinism: the row-group order, the interleave and the in-buffer permutation of an epoch
all come from one seed drawn from the caller's generator, so a seed fixes the batch order.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import torch

from ecat_tasks.models.data import Batchable

RowMask = Callable[[pa.Table], np.ndarray]
RowValues = Callable[[pa.Table], np.ndarray]  # per-row values (weights)
# frame of one block, its weights and constant extras -> tensors (the model's encoders)
Encode = Callable[[pd.DataFrame, np.ndarray, dict[str, np.ndarray]], Batchable]

DEFAULT_BUFFER_ROWS = 1_048_576
SLICE_ROWS = 16_384
MIN_SLICE_ROWS = 64


@dataclass(frozen=True)
class Part:
    """Rows that one source contributes: lake partitions (``paths``) or an in-memory ``table``.

    ``rows`` (sorted positions in the part's file order) selects rows by position, with
    ``row_weight`` aligned to it; ``keep`` filters by content; ``weight`` (a function of the
    rows) overrides the weights; ``const`` adds constant extra columns (e.g. ``domain``).
    """

    paths: tuple[Path, ...] = ()
    table: pa.Table | None = None
    rows: np.ndarray | None = None
    row_weight: np.ndarray | None = None
    keep: RowMask | None = None
    weight: RowValues | None = None
    const: dict[str, float] = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # columns ``keep`` and ``weight`` read
    name: str = "rows"

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, weight: np.ndarray | None = None, name: str = "frame",
                   **const: float) -> "Part":
        """A small in-memory frame (tests, held-out subsets) as a part; ``weight`` aligned with its rows."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        row_weight = None if weight is None else np.asarray(weight, np.float32)
        rows = None if weight is None else np.arange(len(frame))
        return cls(table=table, rows=rows, row_weight=row_weight, const=dict(const), name=name)

    def files(self) -> list[Path]:
        return [f for path in self.paths for f in sorted(Path(path).glob("*.parquet"))]

    def units(self) -> list[tuple[object, int, int]]:
        """Readable units (row-group fragments or table slices): (unit, first row, rows), in file order."""
        if self.table is not None:
            n = self.table.num_rows
            return [(None, start, min(SLICE_ROWS, n - start)) for start in range(0, n, SLICE_ROWS)]
        out: list[tuple[object, int, int]] = []
        start = 0
        files = self.files()
        if not files:
            return out
        for frag in pds.dataset([str(f) for f in files], format="parquet").get_fragments():
            for rg in frag.split_by_row_group():
                n = sum(info.num_rows for info in rg.row_groups)  # count_rows() counts the whole file
                out.append((rg, start, n))
                start += n
        return out

    def read(self, unit: tuple[object, int, int], columns: Sequence[str], slice_rows: int = SLICE_ROWS) -> Iterator[pa.Table]:
        """Selected, filtered slices (of ``slice_rows`` rows before filtering) of one unit, with
        ``__weight`` and the constant columns appended."""
        cols = list(dict.fromkeys([*columns, *self.needs]))
        frag, start, n = unit
        if self.table is not None:
            part = self.table.slice(start, n).select(cols)
            raw: Iterator[pa.Table] = (part.slice(i, slice_rows) for i in range(0, n, slice_rows))
        else:
            raw = (pa.Table.from_batches([b]) for b in frag.to_batches(columns=cols, batch_size=slice_rows) if b.num_rows)
        offset = start
        for table in raw:
            first, offset = offset, offset + table.num_rows
            w = None
            if self.rows is not None:
                lo, hi = np.searchsorted(self.rows, [first, offset])
                if hi == lo:
                    continue
                table = table.take(pa.array(self.rows[lo:hi] - first))
                w = self.row_weight[lo:hi] if self.row_weight is not None else None
            if self.weight is not None:
                w = self.weight(table)
            w = np.ones(table.num_rows, np.float32) if w is None else np.asarray(w, np.float32)
            if self.keep is not None:
                mask = np.asarray(self.keep(table), bool)
                if not mask.all():
                    table, w = table.filter(pa.array(mask)), w[mask]
            if table.num_rows == 0:
                continue
            table = table.append_column("__weight", pa.array(w))
            for name, value in self.const.items():
                table = table.append_column(f"__const_{name}", pa.array(np.full(table.num_rows, value, np.float32)))
            yield table


def select_ids(part: Part, ids: pa.Array | pa.ChunkedArray, weight: np.ndarray | None = None) -> Part:
    """``part`` restricted to the rows whose ``sample_id`` is in ``ids`` (``weight`` aligned with ``ids``).

    One pass over the part's ``sample_id`` column turns the ids into row positions; every
    epoch then selects by position, with no string work. The pass reads the column a slice at
    a time and looks each id up by a 64-bit hash among the ids' hashes (sorted once, 16 bytes
    an id), confirming every hit on the id itself: memory is the ids plus one slice, not the
    day's whole id column and a hash table of ``ids`` (1.8 GB at 15.5M source rows).
    Duplicate or null ``ids`` (or two ids with one hash) take the exact lookup over the whole
    column instead, with the same result.
    """
    ids = ids.cast(pa.string())
    keys = _id_hashes(ids)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    if ids.null_count or bool(np.any(keys[1:] == keys[:-1])):
        return _select_ids_whole(part, ids, weight)
    rows, found = [], []
    start = 0
    for column in _id_slices(part):
        hashes = _id_hashes(column)
        probe = np.argsort(hashes)  # searched in sorted order: each search starts where the last ended
        at = np.empty(len(hashes), np.int64)
        at[probe] = np.minimum(np.searchsorted(keys, hashes[probe]), max(len(keys) - 1, 0))
        hit = np.flatnonzero(keys[at] == hashes) if len(keys) else np.zeros(0, np.int64)
        where = order[at[hit]]
        same = pc.fill_null(pc.equal(column.take(pa.array(hit)), ids.take(pa.array(where))), False)
        same = same.to_numpy(zero_copy_only=False)
        rows.append(start + hit[same])
        found.append(where[same])
        start += len(column)
    row_at = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    row_weight = None if weight is None else np.asarray(weight, np.float32)[np.concatenate(found) if found else row_at]
    return replace(part, rows=row_at, row_weight=row_weight)


def _id_hashes(ids: pa.Array | pa.ChunkedArray, chunk: int = 1_000_000) -> np.ndarray:
    """A 64-bit hash per id (pandas' string hash), computed a chunk at a time (Python strings
    are made for one chunk only)."""
    return np.concatenate([np.zeros(0, np.uint64)] + [
        pd.util.hash_array(ids.slice(i, chunk).to_numpy(zero_copy_only=False), categorize=False)
        for i in range(0, len(ids), chunk)])


def _id_slices(part: Part, slice_rows: int = 1_000_000) -> Iterator[pa.Array]:
    """The part's ``sample_id`` column as strings, in file order, a slice at a time."""
    if part.table is not None:
        column = part.table.column("sample_id")
        for i in range(0, len(column), slice_rows):
            yield column.slice(i, slice_rows).combine_chunks().cast(pa.string())
        return
    for f in part.files():
        for batch in pq.ParquetFile(f).iter_batches(batch_size=slice_rows, columns=["sample_id"]):
            yield batch.column(0).cast(pa.string())


def _select_ids_whole(part: Part, ids: pa.Array | pa.ChunkedArray, weight: np.ndarray | None) -> Part:
    """:func:`select_ids` by one exact lookup over the whole column (first match of each id)."""
    column = pa.chunked_array(list(_id_slices(part)), type=pa.string())
    idx = pc.index_in(column, value_set=ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids)
    found = pc.is_valid(idx).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(found)
    row_weight = None
    if weight is not None:
        row_weight = np.asarray(weight, np.float32)[pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)[rows]]
    return replace(part, rows=rows, row_weight=row_weight)


def drop_rows(mask_fn: Callable[[pd.DataFrame], np.ndarray], columns: Sequence[str]) -> RowMask:
    """A row filter that keeps the rows where ``mask_fn`` (on a frame of ``columns``) is False."""
    cols = list(columns)
    return lambda t: ~np.asarray(mask_fn(t.select(cols).to_pandas()), bool)


def with_filter(part: Part, keep: RowMask, needs: Sequence[str]) -> Part:
    """``part`` restricted further to the rows ``keep`` marks."""
    first = part.keep
    combined = keep if first is None else (lambda t: first(t) & keep(t))
    return replace(part, keep=combined, needs=tuple(dict.fromkeys([*part.needs, *needs])))


def part_totals(part: Part) -> tuple[int, float]:
    """Rows of a part after its filter, and the sum of their weights (one pass over the filter columns)."""
    rows, total = 0, 0.0
    if part.keep is None and part.weight is None:
        rows = len(part.rows) if part.rows is not None else sum(n for _, _, n in part.units())
        total = float(part.row_weight.sum(dtype=np.float64)) if part.row_weight is not None else float(rows)
        return rows, total
    for unit in part.units():
        for table in part.read(unit, ()):
            rows += table.num_rows
            total += float(np.sum(table.column("__weight").to_numpy(), dtype=np.float64))
    return rows, total


def _tables_to_frame(tables: list[pa.Table]) -> tuple[pd.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    weight = table.column("__weight").to_numpy().astype(np.float32)
    const_cols = [c for c in table.column_names if c.startswith("__const_")]
    const = {c[len("__const_"):]: table.column(c).to_numpy().astype(np.float32) for c in const_cols}
    frame = table.drop_columns(["__weight", *const_cols]).to_pandas()
    return frame, weight, const


def concat_blocks(blocks: list[Batchable]) -> Batchable:
    return Batchable(torch.cat([b.sparse for b in blocks]), torch.cat([b.dense for b in blocks]),
                     torch.cat([b.label for b in blocks]), torch.cat([b.weight for b in blocks]),
                     {k: torch.cat([b.extra[k] for b in blocks]) for k in blocks[0].extra})


def _take(data: Batchable, idx: torch.Tensor | slice) -> Batchable:
    return Batchable(data.sparse[idx], data.dense[idx], data.label[idx], data.weight[idx],
                     {k: v[idx] for k, v in data.extra.items()})


def _clone(data: Batchable) -> Batchable:
    """A copy that does not keep the block it was sliced from alive."""
    return Batchable(data.sparse.clone(), data.dense.clone(), data.label.clone(), data.weight.clone(),
                     {k: v.clone() for k, v in data.extra.items()})


def _permuted(head: Batchable | None, block: Batchable, order: torch.Tensor) -> Batchable:
    """Rows ``order`` of ``head`` followed by ``block``, without building that concatenation
    (gathered from each part; the same values as ``_take(concat_blocks([head, block]), order)``)."""
    if head is None or not len(head):
        return _take(block, order)
    from_head = order < len(head)
    at_head, at_block = from_head.nonzero().squeeze(1), (~from_head).nonzero().squeeze(1)
    rows_head, rows_block = order[at_head], order[at_block] - len(head)

    def gather(h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = b.new_empty((len(order), *b.shape[1:]))
        out[at_head] = h[rows_head]
        out[at_block] = b[rows_block]
        return out

    return Batchable(gather(head.sparse, block.sparse), gather(head.dense, block.dense),
                     gather(head.label, block.label), gather(head.weight, block.weight),
                     {k: gather(head.extra[k], v) for k, v in block.extra.items()})


class LakeStream:
    """Shuffled mini-batches over ``parts``, read and encoded block by block (see the module doc)."""

    def __init__(self, parts: Sequence[Part], columns: Sequence[str], encode: Encode | None = None,
                 buffer_rows: int = DEFAULT_BUFFER_ROWS, device: torch.device | str = "cpu") -> None:
        self.parts = list(parts)
        self.columns = list(columns)
        self.encode = encode
        self.buffer_rows = max(int(buffer_rows), 1)
        self.device = torch.device(device)
        self._units = [p.units() for p in self.parts]
        self._len: int | None = None
        self._cached: Batchable | None = None

    def __len__(self) -> int:
        """Rows after filtering (a counting pass the first time, over the filter columns only)."""
        if self._len is None:
            self._len = sum(part_totals(part)[0] for part in self.parts)
        return self._len

    def tables(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """Every filtered slice in file order (no shuffle): for vocabularies, statistics, scoring."""
        cols = self.columns if columns is None else list(columns)
        for part, units in zip(self.parts, self._units):
            for unit in units:
                yield from part.read(unit, cols)

    def _epoch_slices(self, seed: int | None) -> Iterator[pa.Table]:
        """Slices of every part, row groups in a seeded order, parts interleaved by size.

        Each part is cut into about as many slices as the largest part has (a small part in
        small slices), and each part's slices are spread evenly over the epoch (slice j of n at
        a seeded random point of [j/n, (j+1)/n)): a 3% target part is 3% of every block, never
        bunched into one.
        """
        if seed is None:
            yield from self.tables()
            return
        gen = torch.Generator()
        gen.manual_seed(seed)
        sizes = [sum(n for _, _, n in units) for units in self._units]
        n_slices_max = max([-(-n // SLICE_ROWS) for n in sizes] + [1])
        iters, labels, positions = [], [], []
        for k, (part, units) in enumerate(zip(self.parts, self._units)):
            slice_rows = max(MIN_SLICE_ROWS, -(-sizes[k] // n_slices_max))
            order = torch.randperm(len(units), generator=gen).tolist()
            iters.append(self._read_units(part, [units[i] for i in order], slice_rows))
            n_k = sum(-(-n // slice_rows) for _, _, n in units)
            # slice j of this part goes to position (j + u) / n_k of the epoch, u uniform in [0, 1)
            positions.append((torch.arange(n_k, dtype=torch.float64) + torch.rand(n_k, generator=gen, dtype=torch.float64)) / n_k)
            labels.append(torch.full((n_k,), k, dtype=torch.int64))
        label_order = torch.cat(labels)[torch.argsort(torch.cat(positions), stable=True)].tolist()
        flat = iters
        for k in label_order:
            table = next(flat[k], None)
            if table is not None:
                yield table
        for it in flat:  # slices left over (a unit gave more slices than its estimate)
            yield from it

    def _read_units(self, part: Part, units: list[tuple[object, int, int]], slice_rows: int) -> Iterator[pa.Table]:
        for unit in units:
            yield from part.read(unit, self.columns, slice_rows)

    def blocks(self, seed: int | None) -> Iterator[Batchable]:
        """Encoded blocks of about ``buffer_rows`` rows, in the epoch's order.

        A block's slices are let go before it is encoded and the block itself once yielded
        (no generator local keeps one while the caller works on it).
        """
        pending: list[pa.Table] = []
        rows = 0
        for table in self._epoch_slices(seed):
            pending.append(table)
            rows += table.num_rows
            if rows >= self.buffer_rows:
                rows = 0
                yield self._encode_drained(pending)
        if pending:
            yield self._encode_drained(pending)

    def _encode_drained(self, pending: list[pa.Table]) -> Batchable:
        """The block of ``pending``'s slices, encoded; ``pending`` is emptied first."""
        tables = pending[:]
        pending.clear()
        frame, weight, const = _tables_to_frame(tables)
        del tables
        return self.encode(frame, weight, const)

    def _ready(self, blocks: Iterator[Batchable], seed: int | None, batch_size: int) -> Iterator[Batchable]:
        """``blocks`` as shuffled runs of whole batches: each block, after the rows the previous
        one left over, permuted by the block's seed (``seed`` None: no shuffle); the rows past its
        last whole batch carry into the next. The last run ends with the epoch's short batch."""
        carry: Batchable | None = None
        for block in blocks:
            n = len(block) + (len(carry) if carry is not None else 0)
            if seed is not None:
                block_gen = torch.Generator()
                block_gen.manual_seed(seed)
                seed = (seed * 6364136223846793005 + 1442695040888963407) % 2**62
                block = _permuted(carry, block, torch.randperm(n, generator=block_gen))
            elif carry is not None:
                block = concat_blocks([carry, block])
            full = n - n % batch_size
            carry = _clone(_take(block, slice(full, n))) if full < n else None
            if full:
                yield _take(block, slice(0, full)) if full < n else block
        if carry is not None:
            yield carry

    def _prefetched(self, items: Iterator[Batchable]) -> Iterator[Batchable]:
        """``items``, produced in a background thread at most one ahead of the consumer.

        The producer builds item k+1 only once the consumer has taken item k, so at most two
        blocks live at a time (the one training and the next), not also a finished one waiting
        for the queue.
        """
        q: queue.Queue = queue.Queue()
        turn = threading.Semaphore(1)  # the producer's permission to build the next item
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                while True:
                    turn.acquire()
                    if stop.is_set():
                        return
                    item = next(items, done)
                    q.put(item)
                    if item is done:
                        return
                    del item
            except BaseException as exc:  # re-raised in the consumer
                q.put(exc)

        thread = threading.Thread(target=produce, name="lake-stream", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                turn.release()
                yield item
                del item
        finally:
            stop.set()
            while thread.is_alive():
                turn.release()
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)

    def batches(self, batch_size: int, generator: torch.Generator | None, shuffle: bool = True) -> Iterator[Batchable]:
        """Mini-batches of one epoch; rows left over at a block's end carry into the next block.

        Streamed, the next block is read, encoded and shuffled in a background thread while
        the current one trains (:meth:`_prefetched`).
        """
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if shuffle else None
        if self._cached is None and self._fits_in_buffer():
            self._cached = concat_blocks(list(self.blocks(None))) if len(self) else None
        if self._cached is not None or not len(self):
            source = self._ready(iter([self._cached] if self._cached is not None else []), seed, batch_size)
        else:
            source = self._prefetched(self._ready(self.blocks(seed), seed, batch_size))
        for run in source:
            run = run.to(self.device)
            for start in range(0, len(run), batch_size):
                yield _take(run, slice(start, start + batch_size))

    def _fits_in_buffer(self) -> bool:
        return sum(n for units in self._units for _, _, n in units) <= self.buffer_rows
