import duckdb
import numpy as np
import pyarrow as pa

from ecat_tasks.features import sample_columns
from ecat_tasks.synthetic import SCENARIOS, World, scenario_kinds


def _day(world: World, rows: int, chunk_rows: int) -> pa.Table:
    return pa.concat_tables(world.day_chunks("2026-03-01", rows, chunk_rows=chunk_rows))


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b = _day(World(seed=3), 5_000, 2_000), _day(World(seed=3), 5_000, 2_000)
    assert a.equals(b)
    c = _day(World(seed=4), 5_000, 2_000)
    assert not a.column("click").equals(c.column("click"))


def test_streams_in_bounded_chunks_with_unique_ids():
    chunks = list(World().day_chunks("2026-03-01", 25_000, chunk_rows=10_000))
    assert [c.num_rows for c in chunks] == [10_000, 10_000, 5_000]
    ids = np.concatenate([c.column("sample_id").to_numpy(zero_copy_only=False) for c in chunks])
    assert len(set(ids)) == 25_000


def test_contract_columns_scenarios_and_target_share():
    table = _day(World(), 100_000, 50_000)
    assert table.column_names == sample_columns()
    scen = table.column("scenario").to_numpy(zero_copy_only=False)
    kinds = scenario_kinds()
    assert len(set(scen)) >= 5 and set(scen) <= set(kinds)
    target_share = np.mean(scen == "mini_app")
    assert 0.01 <= target_share <= 0.05
    assert {"similar", "conflict", "generic", "target"} <= set(kinds.values())
    for label in ("click", "conversion"):
        assert set(np.unique(table.column(label).to_numpy())) <= {0, 1}
    # conversions only follow clicks
    assert np.all(table.column("conversion").to_numpy() <= table.column("click").to_numpy())


def test_seed_warehouse_replaces_days(tmp_path):
    from ecat_tasks.synthetic import seed_warehouse

    path = tmp_path / "w.duckdb"
    seed_warehouse(path, "2026-03-01", 2, 3_000)
    seed_warehouse(path, "2026-03-02", 1, 3_000)  # re-seeding a day replaces it
    with duckdb.connect(str(path)) as con:
        counts = con.execute("SELECT ds, COUNT(*) FROM samples GROUP BY ds ORDER BY ds").fetchall()
    assert [c[1] for c in counts] == [3_000, 3_000]
    assert len(SCENARIOS) >= 5
