"""Synthetic entire space: the ``samples`` table for the demo, the tests and the benchmarks.

The world is fixed by the seed: users, items and categories with latent tastes, and six
scenarios. ``mini_app`` is the target (3% of impressions) with its own item pool and a
behaviour shift (it likes cheap items, it scores items through its own taste vector). One
scenario resembles it (same users, items and taste), two conflict with it (reversed taste,
other items), two are generic. So naive mixing of the entire space hurts the target, while
the resembling scenario helps it: exactly the situation ECAT's selection is for.

Rows are generated in fixed-size chunks, each from its own ``(seed, day, chunk)`` random
stream, so any day streams in bounded memory and is identical however it is consumed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pyarrow as pa

from ecat_tasks.spec import FeatureSpec, demo_spec, load_spec, quote_ident, quote_table
from ecat_tasks.storage import parse_ds

log = logging.getLogger(__name__)

CHUNK_ROWS = 250_000
K = 8  # latent dimension
EPOCH = dt.date(2026, 1, 1)


@dataclass(frozen=True)
class Scenario:
    name: str
    share: float
    kind: str  # target | similar | generic | conflict


SCENARIOS = (
    Scenario("mini_app", 0.03, "target"),
    Scenario("home_feed", 0.37, "generic"),
    Scenario("search", 0.20, "generic"),
    Scenario("mini_games", 0.14, "similar"),
    Scenario("live_stream", 0.14, "conflict"),
    Scenario("coupons", 0.12, "conflict"),
)


def scenario_kinds() -> dict[str, str]:
    """Ground truth for tests and benchmarks: which scenario resembles or conflicts with the target."""
    return {s.name: s.kind for s in SCENARIOS}


@dataclass(frozen=True)
class World:
    seed: int = 7
    n_users: int = 20_000
    n_items: int = 4_000
    n_categories: int = 40
    target_categories: int = 8
    drift: float = 0.004

    @cached_property
    def _static(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 0])
        s: dict[str, np.ndarray] = {}
        # Users share taste with their segment (city x age), so attributes carry signal too.
        s["user_age"] = rng.integers(0, 7, self.n_users)
        s["user_gender"] = rng.integers(0, 3, self.n_users)
        s["user_city"] = rng.integers(0, 30, self.n_users)
        segment_vec = rng.normal(0, 1, (30, 7, K))
        s["user_vec"] = 0.8 * segment_vec[s["user_city"], s["user_age"]] + 0.6 * rng.normal(0, 1, (self.n_users, K))
        s["user_drift"] = rng.normal(0, 1, (self.n_users, K))
        s["user_activity"] = np.round(rng.lognormal(1.5, 0.8, self.n_users), 3)
        cat_vec = rng.normal(0, 1, (self.n_categories, K))
        item_cat = rng.integers(0, self.n_categories, self.n_items)
        s["item_category"] = item_cat
        s["item_vec"] = cat_vec[item_cat] + 0.4 * rng.normal(0, 1, (self.n_items, K))
        s["item_brand"] = rng.integers(0, 200, self.n_items)
        s["item_price"] = np.round(rng.lognormal(3.0, 0.7, self.n_items), 2)
        s["item_popularity"] = np.round(rng.beta(2, 5, self.n_items), 4)
        # Taste vectors: the target's own, a resembling one, a reversed one, a neutral one.
        m_t = np.where(rng.random(K) < 0.5, -1.0, 1.0) * rng.uniform(0.6, 1.4, K)
        s["taste_target"] = m_t
        s["taste_similar"] = m_t + 0.15 * rng.normal(0, 1, K)
        s["taste_conflict"] = -m_t
        # The platform's general taste mostly agrees with the mini-app's (5 of 8 dimensions).
        s["taste_generic"] = np.where(np.arange(K) < 5, m_t, np.abs(m_t))
        # Who visits each scenario: the target's users are a quarter of the platform.
        target_users = rng.permutation(self.n_users)[: self.n_users // 4]
        is_target_user = np.zeros(self.n_users, bool)
        is_target_user[target_users] = True
        s["is_target_user"] = is_target_user
        return s

    @cached_property
    def pools(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per scenario, the user and item sampling probabilities."""
        st = self._static
        in_target_cat = st["item_category"] < self.target_categories
        conflict_cat = st["item_category"] >= self.n_categories // 2
        pop = st["item_popularity"] + 0.05
        tu = st["is_target_user"]

        def norm(w: np.ndarray) -> np.ndarray:
            return w / w.sum()

        out = {}
        for sc in SCENARIOS:
            if sc.kind == "target":
                users, items = tu * 1.0, in_target_cat * pop
            elif sc.kind == "similar":
                users, items = tu * 4.0 + 1.0, (in_target_cat * 4.0 + 1.0) * pop
            elif sc.kind == "conflict":
                users, items = tu * 0.3 + 1.0, (conflict_cat * 6.0 + in_target_cat * 0.5 + 0.2) * pop
            else:
                users, items = np.ones(self.n_users), pop
            out[sc.name] = (norm(users.astype(float)), norm(items.astype(float)))
        return out

    # ------------------------------------------------------------------------------------
    def day_chunks(self, ds: str, rows: int, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.Table]:
        """Yield the rows of one day as Arrow tables of at most ``chunk_rows`` rows."""
        day = parse_ds(ds)
        # Drift grows with days since the world's epoch (capped), whatever range is seeded.
        day_index = min(max(day.toordinal() - EPOCH.toordinal(), 0), 120)
        for chunk, start in enumerate(range(0, rows, chunk_rows)):
            yield self._chunk(day, day_index, chunk, start, min(chunk_rows, rows - start))

    def _chunk(self, day: dt.date, day_index: int, chunk: int, start: int, n: int) -> pa.Table:
        st = self._static
        rng = np.random.default_rng([self.seed, 1, day.toordinal(), chunk])
        shares = np.array([s.share for s in SCENARIOS])
        sc_idx = rng.choice(len(SCENARIOS), n, p=shares / shares.sum())
        users = np.empty(n, np.int64)
        items = np.empty(n, np.int64)
        taste = np.empty((n, K))
        bias = np.empty(n)
        price_coef = np.empty(n)
        for j, sc in enumerate(SCENARIOS):
            mask = sc_idx == j
            m = int(mask.sum())
            if not m:
                continue
            pu, pi = self.pools[sc.name]
            users[mask] = rng.choice(self.n_users, m, p=pu)
            items[mask] = rng.choice(self.n_items, m, p=pi)
            taste[mask] = st[f"taste_{sc.kind}"]
            bias[mask] = {"target": -1.2, "similar": -1.3, "conflict": -1.8, "generic": -1.9}[sc.kind]
            price_coef[mask] = -0.8 if sc.kind in ("target", "similar") else 0.3
        u = st["user_vec"][users] + self.drift * day_index * st["user_drift"][users]
        v = st["item_vec"][items]
        price = st["item_price"][items]
        pop = st["item_popularity"][items]
        device = rng.integers(0, 4, n)
        affinity = (u * taste * v).sum(1) / np.sqrt(K)
        logit = bias + 1.6 * affinity + price_coef * (np.log(price) - 3.0) + 1.5 * pop + 0.1 * (device == 0)
        click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        conv_logit = -1.0 + 0.6 * affinity - 0.4 * (np.log(price) - 3.0)
        conversion = (click & (rng.random(n) < 1 / (1 + np.exp(-conv_logit)))).astype(np.int8)
        seconds = np.sort(rng.integers(0, 86_400, n))
        midnight = np.datetime64(day.isoformat(), "s")
        event_ts = midnight + seconds.astype("timedelta64[s]")
        names = np.array([s.name for s in SCENARIOS])
        row_no = np.arange(start, start + n)
        return pa.table({
            "sample_id": pa.array(np.char.add(f"{day.isoformat()}-", np.char.zfill(row_no.astype(str), 9))),
            "ds": pa.array(np.full(n, np.datetime64(day.isoformat(), "D"))),
            "event_ts": pa.array(event_ts),
            "scenario": pa.array(names[sc_idx]),
            "user_id": pa.array(users + 1_000_000),  # raw ids are not contiguous
            "item_id": pa.array(items + 5_000_000),
            "category_id": pa.array(st["item_category"][items] + 100),
            "user_age": pa.array(st["user_age"][users]),
            "user_gender": pa.array(st["user_gender"][users]),
            "user_city": pa.array(st["user_city"][users]),
            "item_brand": pa.array(st["item_brand"][items]),
            "device": pa.array(device),
            "hour": pa.array(seconds // 3600),
            "item_price": pa.array(price),
            "user_activity": pa.array(st["user_activity"][users]),
            "item_popularity": pa.array(pop),
            "click": pa.array(click.astype(np.int64)),
            "conversion": pa.array(conversion.astype(np.int64)),
        })


SAMPLES_DDL = demo_spec().ddl()  # the demo table, derived from specs/demo.yaml


def spec_table(chunk: pa.Table, spec: FeatureSpec, generated: Mapping[str, str] | None = None) -> pa.Table:
    """A generated chunk in ``spec``'s warehouse columns and order.

    Role, id and label columns come from the generator's column of the same role; a feature
    column from ``generated[column]`` when given, else the generator's column of its name.
    String-typed sparse columns get the generated values as text.
    """
    generated = generated or {}
    arrays, names = [], []
    for col in spec.lake_columns():
        src = col.name if col.kind in ("role", "id", "label") else generated.get(col.source, col.source)
        if src not in chunk.column_names:
            raise ValueError(f"the synthetic generator has no column {src!r} for spec column {col.source!r}; "
                             f"generated columns: {chunk.column_names} (map it with generated={{...}})")
        values = chunk.column(src)
        if col.sparse_type == "string" and col.kind in ("id", "sparse"):
            values = values.cast(pa.string())
        arrays.append(values)
        names.append(col.source)
    return pa.table(arrays, names=names)


def seed_warehouse(
    path: Path | str,
    start_ds: str,
    days: int,
    rows_per_day: int,
    world: World | None = None,
    spec: FeatureSpec | None = None,
    generated: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Write ``days`` days of samples into the DuckDB file ``path`` (replacing those days).

    The table is ``spec``'s (the demo spec by default): its DDL, its column names, the
    features it declares (see :func:`spec_table` for ``generated``).
    """
    import duckdb

    world = world or World()
    spec = spec or demo_spec()
    table, date = quote_table(spec.table), quote_ident(spec.date)
    columns = ", ".join(quote_ident(c.source) for c in spec.lake_columns())
    start = parse_ds(start_ds)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    total = 0
    with duckdb.connect(str(path)) as con:
        con.execute(spec.ddl())
        for d in range(days):
            ds = (start + dt.timedelta(days=d)).isoformat()
            con.execute("BEGIN TRANSACTION")
            con.execute(f"DELETE FROM {table} WHERE {date} = CAST(? AS DATE)", [ds])
            for chunk in world.day_chunks(ds, rows_per_day):
                con.register("chunk_view", spec_table(chunk, spec, generated))
                con.execute(f"INSERT INTO {table} ({columns}) SELECT * FROM chunk_view")
                con.unregister("chunk_view")
                total += chunk.num_rows
            con.execute("COMMIT")
    secs = time.perf_counter() - t0
    log.info("seeded warehouse %s table %s: %d days from %s, %d rows in %.1fs (%.0f rows/s)",
             path, spec.table, days, start_ds, total, secs, total / max(secs, 1e-9))
    return {"rows": total, "seconds": secs, "rows_per_s": total / max(secs, 1e-9)}


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m ecat_tasks.synthetic --warehouse PATH --start-ds D --days N --rows R``."""
    import argparse

    parser = argparse.ArgumentParser(description="Seed the DuckDB warehouse with synthetic entire-space samples.")
    parser.add_argument("--warehouse", required=True, type=Path)
    parser.add_argument("--start-ds", required=True)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--rows", type=int, default=300_000, help="rows per day")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--if-absent", action="store_true", help="do nothing when the warehouse file exists")
    parser.add_argument("--spec", default=None, help="feature spec of the table to write (default: the demo spec); "
                        "its feature columns must be generator columns")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.if_absent and args.warehouse.exists():
        log.info("warehouse %s exists; not seeding", args.warehouse)
        return
    spec = load_spec(args.spec) if args.spec else None
    seed_warehouse(args.warehouse, args.start_ds, args.days, args.rows, World(seed=args.seed), spec)


if __name__ == "__main__":
    main()
