"""MovieLens-100K as a warehouse table in its own columns, for benchmarks (spec: specs/movielens.yaml).

The ratings come from the ml-100k atomic files shipped inside the ``recbole==1.2.1`` wheel,
which is fetched once with ``pip download`` into a git-ignored cache and read in place with
``zipfile``. The data's licence forbids redistribution: never commit the cache or a
warehouse built from it.

The table ``ratings`` (one row per rating, 100,000 rows) keeps MovieLens's own notions; the
pipeline reads it through ``specs/movielens.yaml`` alone, no code maps it onto the demo's columns:

* ``rating_id = f"ml-{user}-{movie}"`` (ML-100K has one rating per user and movie),
  ``user_id`` and ``movie_id`` the raw ML ids.
* ``genre_group`` (the scenario): ratings of movies whose genre list contains ``target_genre``
  form the target mini-app (``mini_app``, the pipeline's default target); every other rating
  takes the movie's first genre, lower-cased with ``'`` dropped and other punctuation as ``_``
  (``comedy``, ``drama``, ``childrens``, ``sci_fi``, ...), so the entire space has many scenarios.
* labels: ``liked = rating >= 4``, ``loved = rating == 5``.
* user columns: ``age_group = age // 10``, ``gender`` (``M``/``F``), ``occupation``,
  ``zip_prefix`` (the zip code's first three characters), ``user_ratings`` (the user's rating count).
* movie columns: ``genre`` (first genre), ``genres`` (the whole list, space separated),
  ``release_year``, ``movie_age`` (1998 minus the release year), ``movie_popularity`` (the
  movie's rating count over the largest, in (0, 1]). Counts are taken over the whole data set
  (all days), a small look-ahead that is acceptable for a benchmark, not for a production feature.
* ``hour_of_day``: hour of the original timestamp (UTC).
* days: the ratings, ordered by (timestamp, user_id, movie_id), are cut into ``n_days``
  consecutive buckets of equal size (timestamp quantiles; ties at a boundary are split in
  that order). Bucket ``b`` becomes the day ``start_ds + b`` (``day``); ``rated_at`` spreads the
  bucket's ratings over that day in their time order (a bucket is about two weeks of the real
  timeline), so ``day`` and ``rated_at`` agree and a day's latest rows are its latest ratings
  (the time-cut validation slice, ``validation_by=time``, reads that order).

CLI: ``python -m bench.movielens --warehouse PATH [--target-genre Film-Noir] [--days 14]``.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ecat_tasks.config import REPO_ROOT
from ecat_tasks.spec import FeatureSpec, load_spec, quote_table
from ecat_tasks.storage import file_sha256, parse_ds

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(__file__).resolve().parent / ".cache"
WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
# sha256 of the wheel as served by PyPI (pip verifies the download; this guards the cache).
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER_PREFIX = "recbole/dataset_example/ml-100k/ml-100k."
TARGET_SCENARIO = "mini_app"
SPEC_PATH = REPO_ROOT / "specs" / "movielens.yaml"
RELEASE_REFERENCE_YEAR = 1998  # the last year of ML-100K's ratings
DOWNLOAD_TIMEOUT_S = 300

_ARROW_TYPES = {"VARCHAR": pa.string(), "DATE": pa.date32(), "TIMESTAMP": pa.timestamp("us"),
                "BIGINT": pa.int64(), "DOUBLE": pa.float64()}


def movielens_spec() -> FeatureSpec:
    return load_spec(SPEC_PATH)


class MovieLensUnavailable(RuntimeError):
    """The wheel is not cached and pip could not download it (no registry access)."""


# ----------------------------------------------------------------------------------------
# Source files
# ----------------------------------------------------------------------------------------
def ensure_wheel(cache_dir: Path | str = DEFAULT_CACHE_DIR) -> Path:
    """The cached recbole wheel, downloaded with ``pip download --no-deps`` when missing."""
    cache_dir = Path(cache_dir)
    wheel = cache_dir / WHEEL_NAME
    if not wheel.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s into %s", WHEEL_REQUIREMENT, cache_dir)
        # Download into a private folder, then move: a concurrent reader never sees half a file.
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".dl-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--quiet", WHEEL_REQUIREMENT, "-d", tmp]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise MovieLensUnavailable(f"pip download {WHEEL_REQUIREMENT} failed: {exc}") from exc
            got = Path(tmp) / WHEEL_NAME
            if proc.returncode != 0 or not got.is_file():
                tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
                raise MovieLensUnavailable(
                    f"pip download {WHEEL_REQUIREMENT} failed (rc={proc.returncode}): {' | '.join(tail)}")
            os.replace(got, wheel)
    digest = file_sha256(wheel)
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheel}: sha256 {digest} is not the expected {WHEEL_SHA256}; delete it and retry")
    return wheel


def _read_atomic(zf: zipfile.ZipFile, suffix: str) -> pd.DataFrame:
    """One RecBole atomic file (tab separated, header ``name:type``) as strings."""
    raw = zf.read(MEMBER_PREFIX + suffix)
    frame = pd.read_csv(io.BytesIO(raw), sep="\t", dtype=str, keep_default_na=False,
                        quoting=3, encoding="utf-8")  # quoting=3: csv.QUOTE_NONE, titles hold quotes
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


@functools.lru_cache(maxsize=2)
def _load_raw(wheel: str, mtime_ns: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    with zipfile.ZipFile(wheel) as zf:
        inter = _read_atomic(zf, "inter")
        users = _read_atomic(zf, "user")
        items = _read_atomic(zf, "item")
    inter = pd.DataFrame({
        "user_id": inter["user_id"].astype(np.int64),
        "item_id": inter["item_id"].astype(np.int64),
        "rating": inter["rating"].astype(float).round().astype(np.int64),
        "timestamp": inter["timestamp"].astype(float).astype(np.int64),
    })
    return inter, users, items


def load_movielens(cache_dir: Path | str = DEFAULT_CACHE_DIR) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(ratings, users, items) of ML-100K as read from the wheel (callers must not mutate them)."""
    wheel = ensure_wheel(cache_dir)
    return _load_raw(str(wheel), wheel.stat().st_mtime_ns)


@functools.lru_cache(maxsize=1)
def samples_schema() -> pa.Schema:
    """The Arrow schema of the spec's table, read from its DDL (column order included)."""
    import duckdb

    spec = movielens_spec()
    with duckdb.connect() as con:
        con.execute(spec.ddl())
        described = con.execute(f"DESCRIBE {quote_table(spec.table)}").fetchall()
    fields = []
    for name, sql_type, null, *_ in described:
        if sql_type not in _ARROW_TYPES:
            raise TypeError(f"{spec.path}: column {name} has type {sql_type}, unknown to the MovieLens adapter")
        fields.append(pa.field(name, _ARROW_TYPES[sql_type], nullable=(null == "YES")))
    return pa.schema(fields)


# ----------------------------------------------------------------------------------------
# Mapping
# ----------------------------------------------------------------------------------------
def _scenario_name(genre: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", genre.lower().replace("'", "")).strip("_") or "unknown"


def _item_table(items: pd.DataFrame) -> pd.DataFrame:
    genres = items["class"].str.split()
    first = genres.str[0].fillna("unknown")
    year = pd.to_numeric(items["release_year"], errors="coerce")
    from_title = pd.to_numeric(items["movie_title"].str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce")
    year = year.fillna(from_title)
    missing = int(year.isna().sum())
    year = year.fillna(year.median()).astype(np.int64)
    if missing:
        log.info("%d item(s) without a release year get the median year", missing)
    return pd.DataFrame({
        "movie_id": items["item_id"].astype(np.int64),
        "genre_list": genres,
        "genre": first,
        "genres": genres.str.join(" "),
        "release_year": year,
        "movie_age": np.maximum(RELEASE_REFERENCE_YEAR - year, 0).astype(float),
    })


def _user_table(users: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": users["user_id"].astype(np.int64),
        "age_group": (users["age"].astype(np.int64) // 10),
        "gender": users["gender"].str.upper(),
        "occupation": users["occupation"],
        "zip_prefix": users["zip_code"].str.strip().str[:3].str.upper(),
    })


def _resolve_genre(target_genre: str, items: pd.DataFrame) -> str:
    present = sorted({g for gs in items["class"].str.split() for g in gs})
    by_lower = {g.lower(): g for g in present}
    if target_genre.lower() not in by_lower:
        raise ValueError(f"unknown target genre {target_genre!r}; ML-100K genres: {present}")
    return by_lower[target_genre.lower()]


def build_movielens_samples(
    target_genre: str = "Film-Noir",
    n_days: int = 14,
    start_ds: str = "2026-01-01",
    cache_dir: Path | str = DEFAULT_CACHE_DIR,
) -> pd.DataFrame:
    """ML-100K as rows of the ``ratings`` table: one per rating, columns in the spec's DDL order.

    ``day`` and ``rated_at`` are ``datetime64[us]`` (as DuckDB hands DATE and TIMESTAMP back).
    Raises :class:`MovieLensUnavailable` when the wheel is neither cached nor downloadable,
    ``ValueError`` on an unknown genre.
    """
    start = parse_ds(start_ds)
    inter, users, items = load_movielens(cache_dir)
    if not 1 <= n_days <= len(inter):
        raise ValueError(f"n_days must be in [1, {len(inter)}], got {n_days}")
    genre = _resolve_genre(target_genre, items)
    movie_t = _item_table(items)
    user_t = _user_table(users)

    df = inter.rename(columns={"item_id": "movie_id"})
    df = df.merge(movie_t, on="movie_id", how="left", validate="many_to_one")
    df = df.merge(user_t, on="user_id", how="left", validate="many_to_one")
    if df["genre"].isna().any() or df["age_group"].isna().any():
        raise ValueError("ratings reference users or movies missing from the ml-100k .user/.item files")

    # Days: equal-size buckets of the time order, each spread over its day in that order.
    df = df.sort_values(["timestamp", "user_id", "movie_id"], kind="stable").reset_index(drop=True)
    position = np.arange(len(df), dtype=np.int64)
    bucket = (position * n_days) // len(df)
    first = np.searchsorted(bucket, bucket, side="left")
    size = np.bincount(bucket)[bucket]
    midnight = np.datetime64(start.isoformat(), "D") + bucket.astype("timedelta64[D]")
    day = midnight.astype("datetime64[us]")
    rated_at = day + (((position - first) * 86_400_000_000) // size).astype("timedelta64[us]")

    is_target = df["genre_list"].map(lambda gs: genre in gs).to_numpy(bool)
    scenario = np.where(is_target, TARGET_SCENARIO, df["genre"].map(_scenario_name).to_numpy(object))
    counts_movie = df.groupby("movie_id")["movie_id"].transform("size").to_numpy()
    counts_user = df.groupby("user_id")["user_id"].transform("size").to_numpy()
    rating = df["rating"].to_numpy()

    out = pd.DataFrame({
        "rating_id": ("ml-" + df["user_id"].astype(str) + "-" + df["movie_id"].astype(str)).astype(str),
        "day": day,
        "rated_at": rated_at,
        "genre_group": pd.Series(scenario, dtype=str),
        "user_id": df["user_id"].astype(np.int64),
        "movie_id": df["movie_id"].astype(np.int64),
        "genre": df["genre"].astype(str),
        "age_group": df["age_group"].astype(np.int64),
        "gender": df["gender"].astype(str),
        "occupation": df["occupation"].astype(str),
        "zip_prefix": df["zip_prefix"].astype(str),
        "release_year": df["release_year"].astype(np.int64),
        "genres": df["genres"].astype(str),
        "hour_of_day": ((df["timestamp"].to_numpy() % 86_400) // 3600).astype(np.int64),
        "user_ratings": counts_user.astype(float),
        "movie_popularity": counts_movie / counts_movie.max(),
        "movie_age": df["movie_age"].astype(float),
        "liked": (rating >= 4).astype(np.int64),
        "loved": (rating == 5).astype(np.int64),
    })
    columns = samples_schema().names
    missing = set(columns) - set(out.columns)
    if missing:
        raise ValueError(f"{SPEC_PATH.name} columns the MovieLens table does not produce: {sorted(missing)}")
    if not out["rating_id"].is_unique:
        raise ValueError("rating_id is not unique: the ratings file holds a user/movie pair twice")
    log.info("MovieLens-100K: %d ratings, target genre %s -> %d %s rows, %d days from %s",
             len(out), genre, int(is_target.sum()), TARGET_SCENARIO, n_days, start_ds)
    return out[columns]


# ----------------------------------------------------------------------------------------
# Warehouse
# ----------------------------------------------------------------------------------------
def summarize(samples: pd.DataFrame, target_scenario: str = TARGET_SCENARIO) -> dict[str, Any]:
    """Rows, days, per-day target rows and positive rates (click = liked), scenario sizes."""
    samples = samples.rename(columns={c.source: c.name for c in movielens_spec().lake_columns()})
    ds = samples["ds"].dt.strftime("%Y-%m-%d")
    tgt = samples["scenario"] == target_scenario
    by_day = samples[tgt].groupby(ds[tgt])
    all_days = sorted(ds.unique())

    def per_day(series: pd.Series) -> dict[str, Any]:
        return {d: series.get(d, 0) for d in all_days}

    target_rows = per_day(by_day.size())
    src_by_day = samples[~tgt].groupby(ds[~tgt])
    return {
        "rows": int(len(samples)),
        "days": len(all_days),
        "first_ds": all_days[0],
        "last_ds": all_days[-1],
        "rows_per_day": {d: int(n) for d, n in samples.groupby(ds).size().items()},
        "target_rows": int(tgt.sum()),
        "target_rows_per_day": {d: int(n) for d, n in target_rows.items()},
        "target_click_rate_per_day": {d: round(float(r), 4) for d, r in per_day(by_day["click"].mean()).items()},
        "target_click_rate": round(float(samples.loc[tgt, "click"].mean()), 4),
        "target_conversion_rate": round(float(samples.loc[tgt, "conversion"].mean()), 4),
        "source_rows_per_day": {d: int(n) for d, n in src_by_day.size().items()},
        "source_click_rate_per_day": {d: round(float(r), 4) for d, r in src_by_day["click"].mean().items()},
        "click_rate": round(float(samples["click"].mean()), 4),
        "conversion_rate": round(float(samples["conversion"].mean()), 4),
        "scenarios": {str(k): int(v) for k, v in samples["scenario"].value_counts().items()},
    }


def pipeline_default_checks(stats: dict[str, Any]) -> list[str]:
    """Which per-day validation defaults of :class:`EcatConfig` this data would fail.

    Mirrors validate.py's row-count and label-mean expectations for the target domain, for
    both labels, so a benchmark knows which bounds it must override.
    """
    from ecat_tasks.config import EcatConfig

    cfg = EcatConfig()
    out = []
    low = {d: n for d, n in stats["target_rows_per_day"].items() if n < cfg.min_target_rows}
    if low:
        out.append(f"{len(low)}/{stats['days']} target days have fewer rows than min_target_rows="
                   f"{cfg.min_target_rows} (min {min(low.values())})")
    low = {d: n for d, n in stats["source_rows_per_day"].items() if n < cfg.min_source_rows}
    if low:
        out.append(f"{len(low)}/{stats['days']} source days have fewer rows than min_source_rows={cfg.min_source_rows}")
    for name, rates in (("target click", stats["target_click_rate_per_day"]),
                        ("source click", stats["source_click_rate_per_day"])):
        bad = {d: r for d, r in rates.items() if not cfg.label_rate_min <= r <= cfg.label_rate_max}
        if bad:
            out.append(f"{len(bad)}/{stats['days']} days have a {name} rate outside [{cfg.label_rate_min}, "
                       f"{cfg.label_rate_max}] (range {min(rates.values())}..{max(rates.values())})")
    return out


def seed_movielens_warehouse(
    path: Path | str,
    target_genre: str = "Film-Noir",
    n_days: int = 14,
    start_ds: str = "2026-01-01",
    cache_dir: Path | str = DEFAULT_CACHE_DIR,
) -> dict[str, Any]:
    """Write MovieLens-100K as the ``samples`` table of the DuckDB file ``path``.

    The table is created from the spec's DDL and every existing row is replaced, in one
    transaction. Returns :func:`summarize`'s stats plus ``target_genre``, ``warehouse`` and
    ``seconds``, ``thin_target_days`` (target days under 50 rows) and
    ``pipeline_default_checks`` (the default validation bounds this data would fail).
    """
    import duckdb

    t0 = time.perf_counter()
    samples = build_movielens_samples(target_genre, n_days, start_ds, cache_dir)
    table = pa.Table.from_pandas(samples, schema=samples_schema(), preserve_index=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    spec = movielens_spec()
    with duckdb.connect(str(path)) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(spec.ddl())
            con.execute(f"DELETE FROM {quote_table(spec.table)}")
            con.register("ml_samples_view", table)
            con.execute(f"INSERT INTO {quote_table(spec.table)} SELECT * FROM ml_samples_view")
            con.unregister("ml_samples_view")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    stats = summarize(samples)
    genre = _resolve_genre(target_genre, load_movielens(cache_dir)[2])
    stats.update(target_genre=genre, warehouse=str(path), seconds=round(time.perf_counter() - t0, 2))
    stats["thin_target_days"] = {d: n for d, n in stats["target_rows_per_day"].items() if n < 50}
    if stats["thin_target_days"]:
        log.warning("target days with fewer than 50 rows: %s", stats["thin_target_days"])
    stats["pipeline_default_checks"] = pipeline_default_checks(stats)
    for line in stats["pipeline_default_checks"]:
        log.warning("with the pipeline's default config: %s", line)
    log.info("seeded MovieLens warehouse %s: %d rows, %d days, %d target rows in %.1fs",
             path, stats["rows"], stats["days"], stats["target_rows"], stats["seconds"])
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.movielens", description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", required=True, help="DuckDB file to (re)write the samples table in")
    parser.add_argument("--target-genre", default="Film-Noir", help="genre whose ratings form the target mini-app")
    parser.add_argument("--days", type=int, default=14, help="number of synthetic days")
    parser.add_argument("--start-ds", default="2026-01-01", help="first synthetic day (YYYY-MM-DD)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="where the recbole wheel is kept")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        stats = seed_movielens_warehouse(args.warehouse, args.target_genre, args.days, args.start_ds, args.cache_dir)
    except (MovieLensUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
