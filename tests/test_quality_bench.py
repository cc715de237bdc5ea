"""bench.quality's verdict and bookkeeping: what "ahead" means in the tables of record."""

import argparse

from bench.quality import eval_pairs, lift_of, section_key, write_results


def _runs(*ecat_minus_model):
    return [{"next_day": {"ecat": {"auc": 0.7 + d}, "m": {"auc": 0.7}}} for d in ecat_minus_model]


def _pooled(lo, hi):
    return {"auc": {"lift": (lo + hi) / 2, "lo": lo, "hi": hi, "ahead": lo > 0, "behind": hi < 0}}


def test_ahead_needs_the_pooled_interval_and_every_seed():
    assert lift_of(_runs(0.01, 0.02, 0.01), "m", "auc", _pooled(0.002, 0.02))["verdict"] == "ECAT ahead"
    # the pooled interval excludes 0 but one seed disagrees: not ahead
    one_off = lift_of(_runs(0.03, 0.02, -0.001), "m", "auc", _pooled(0.002, 0.02))
    assert one_off["verdict"] == "not separated" and one_off["wins"] == 2
    # every seed agrees but the interval holds 0: not ahead either
    assert lift_of(_runs(0.01, 0.02, 0.01), "m", "auc", _pooled(-0.001, 0.02))["verdict"] == "not separated"
    assert lift_of(_runs(-0.01, -0.02), "m", "auc", _pooled(-0.03, -0.001))["verdict"] == "ECAT behind"


def test_next_day_pairs_and_result_sections():
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert eval_pairs(days, 2) == [("2026-03-01", "2026-03-02"), ("2026-03-02", "2026-03-03")]
    assert eval_pairs(days, 1) == [("2026-03-02", "2026-03-03")]
    ns = argparse.Namespace
    assert section_key(ns(data="synthetic", target_genre="Film-Noir")) == "nextday-synthetic"
    assert section_key(ns(data="movielens", target_genre="Film-Noir")) == "nextday-movielens-film-noir"
    assert section_key(ns(data="movielens", target_genre="Western")) == "nextday-movielens-western"


def test_write_results_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("## Quality\n\nintro\n\n## Cost\n\ncost text\n")
    write_results(path, "nextday-synthetic", "synthetic v1")
    write_results(path, "nextday-movielens-western", "western v1")
    write_results(path, "nextday-synthetic", "synthetic v2")
    text = path.read_text()
    assert "synthetic v2" in text and "synthetic v1" not in text and "western v1" in text
    assert text.index("western v1") < text.index("## Cost") and text.endswith("cost text\n")


def test_seeds_side_by_side_come_back_in_seed_order(monkeypatch):
    import threading
    import time

    import bench.quality as quality

    started, threads = [], set()

    def fake_run_seed(args, seed, conf):
        started.append(seed)
        threads.add(threading.current_thread().name)
        time.sleep(0.05 * (3 - seed))  # the later seeds finish first
        return {"seed": seed}, [seed]

    monkeypatch.setattr(quality, "run_seed", fake_run_seed)
    args = argparse.Namespace(seeds=[0, 1, 2], jobs=3, runner="airflow", data="synthetic")
    assert quality.run_seeds(args, {}) == [({"seed": s}, [s]) for s in (0, 1, 2)]
    assert len(threads) == 3  # really side by side
    # the direct runner sets the process environment per seed: one at a time
    threads.clear()
    args.runner = "direct"
    assert [r["seed"] for r, _ in quality.run_seeds(args, {})] == [0, 1, 2] and len(threads) == 1
