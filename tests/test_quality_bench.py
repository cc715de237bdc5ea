"""bench.quality's verdict and bookkeeping: what "ahead" means in the tables of record."""

import argparse

import pytest

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


# ----------------------------------------------------------------------------------------
# --replay: the guard decided again on a copy of a kept home
# ----------------------------------------------------------------------------------------
def _tree(root):
    """Every file under ``root`` and its bytes' digest (links as their targets): what "unchanged" means."""
    import hashlib
    import os

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = (os.readlink(path) if os.path.islink(path)
                                                else hashlib.sha256(open(path, "rb").read()).hexdigest())
    return out


def test_replay_reproduces_a_kept_home_and_a_narrower_guard_changes_its_choice(
        tmp_path, extracted_home, monkeypatch):
    """A kept home where the guard served the teacher (every other model ranks its validation rows
    backwards): replayed with the home's own config, the served choice and every served number
    come back equal; replayed with the teacher out of ``guard_candidates``, the guard serves
    another model and the served next-day row is that model's. The kept home is never written."""
    import json
    import shutil

    import ecat_tasks.guard as guard_module
    from conftest import DAYS, tiny_config
    from test_evaluate_promote import train_day
    from test_guard import _Reversed

    import bench.quality as quality
    from ecat_tasks.evaluate import evaluate
    from ecat_tasks.guard import guard
    from ecat_tasks.promote import promote
    from ecat_tasks.score_previous_day import score_previous_day
    from ecat_tasks.storage import Layout

    d1, d2 = DAYS
    conf = {k: v for k, v in tiny_config(guard_rule="margin").to_dict().items() if k != "seed"}
    cfg = tiny_config(**conf, seed=3)
    home = tmp_path / "kept" / "ecat-quality-synthetic-s3-abc"
    shutil.copytree(extracted_home, home / "ecat_home", symlinks=True)
    layout = Layout(home / "ecat_home")
    real = guard_module.load_model
    # the guard alone sees every model but the teacher reversed (replays in this process too)
    monkeypatch.setattr(guard_module, "load_model", lambda d: real(d) if d.parent.name == "teacher" else _Reversed(real(d)))
    monkeypatch.setattr(quality, "OUT_DIR", tmp_path / "out")
    train_day(d1, cfg, layout)  # what bench.quality's run left: d1 trained, guarded, evaluated, promoted, scored on d2
    assert guard(d1, cfg, layout)["served"] == "teacher"
    evaluate(d1, cfg, layout)
    promote(d1, cfg, layout)
    score_previous_day(d2, cfg, layout)
    original = json.loads((layout.report(d1) / "metrics.json").read_text())["models"]
    kept = _tree(home)

    def replay(extra, name):
        argv = ["--data", "synthetic", "--replay", str(home), "--conf", json.dumps({**conf, **extra}),
                "--n-resamples", "20", "--tmp-dir", str(tmp_path), "--keep", "--results", str(tmp_path / name)]
        assert quality.main(argv) == 0
        (run,) = json.loads((tmp_path / "out" / "quality-nextday-synthetic-replay.json").read_text())["runs"]
        copy = Layout(quality.Path(run["home"]) / "ecat_home")
        return run, json.loads((copy.model("served", d1) / "_manifest.json").read_text())

    run, served = replay({}, "same.md")
    assert run["seed"] == 3 and served["served"] == "teacher"
    assert served["calibration"] == json.loads((layout.model("served", d1) / "_manifest.json").read_text())["calibration"]
    day = run["per_day"][d1]["served"]
    for k in quality.METRICS:
        assert day["next_day"][k] == original["served"]["next_day"][k]
        assert day["cold_start"][k] == original["served"]["holdout"][k]
    text = (tmp_path / "same.md").read_text()
    assert "<!-- quality:nextday-synthetic:begin -->" in text and "**Replay** of the kept homes" in text
    assert "| **served** |" in text and f"`{home}`" in text

    run, served = replay({"guard_candidates": ["target_only"]}, "narrow.md")
    assert served["served"] in ("target_only", "ecat") and served["candidates"] == ["target_only", "ecat"]
    day = run["per_day"][d1]
    for view in ("next_day", "cold_start"):  # scored again (score_previous_day, evaluate); calibration keeps the ranking
        assert day["served"][view]["auc"] == pytest.approx(day[served["served"]][view]["auc"], abs=1e-9)
    assert day["served"]["next_day"]["auc"] != original["served"]["next_day"]["auc"]
    assert _tree(home) == kept

    # a config that changes training is no replay
    with pytest.raises(SystemExit, match="student_epochs ran 1, replay 2"):
        quality.main(["--data", "synthetic", "--replay", str(home), "--conf", json.dumps({**conf, "student_epochs": 2}),
                      "--tmp-dir", str(tmp_path), "--no-write"])
    assert _tree(home) == kept


def test_a_home_kept_before_validation_by_is_read_under_the_user_slice(monkeypatch):
    """A home whose report predates ``validation_by`` ran the user slice: the tools read it so,
    not under today's default, whose rows its models may have trained on."""
    import bench.quality as quality
    import ecat_tasks.report as report

    monkeypatch.setattr(report, "read_report", lambda layout, day: {"parameters": {"seed": 1, "validation_pct": 0.15}})
    assert quality.recorded_parameters(None, "2026-03-01")["validation_by"] == "user"
    monkeypatch.setattr(report, "read_report", lambda layout, day: {"parameters": {"validation_by": "time"}})
    assert quality.recorded_parameters(None, "2026-03-01")["validation_by"] == "time"
    monkeypatch.setattr(report, "read_report", lambda layout, day: None)
    assert quality.recorded_parameters(None, "2026-03-01") is None


def test_the_unseen_view_scores_whole_users_as_new_and_the_share_comes_from_training_days(tmp_path):
    import numpy as np
    import pandas as pd

    from bench.guard_rules import as_unseen, unseen_user_share
    from ecat_tasks.storage import Layout

    frame = pd.DataFrame({"user_id": np.repeat(np.arange(400), 3), "click": 0})
    view = as_unseen(frame, 0.7, seed=3)
    moved = view["user_id"].to_numpy() != frame["user_id"].to_numpy()
    assert 0.6 < moved.mean() < 0.8
    assert not np.isin(view["user_id"][moved], frame["user_id"]).any()  # ids no model knows
    assert (view.groupby(frame["user_id"])["user_id"].nunique() == 1).all()  # a user moves whole, keeps one id
    assert view["user_id"].equals(as_unseen(frame, 0.7, seed=3)["user_id"])  # the same users on every call
    assert (as_unseen(frame, 0.0, seed=3)["user_id"] == frame["user_id"]).all()

    layout = Layout(tmp_path / "ecat_home")
    days = {"2026-01-01": ([1, 2], [1, 2, 3]), "2026-01-02": ([1, 4, 4, 5], [6]), "2026-01-03": ([7, 6], [])}
    for ds, (target, source) in days.items():
        for domain, users in (("target", target), ("source", source)):
            path = layout.lake(domain, ds)
            path.mkdir(parents=True)
            pd.DataFrame({"user_id": np.array(users, np.int64)}).to_parquet(path / "part-00000.parquet")
            (path / "_manifest.json").write_text("{}")
    assert unseen_user_share(tmp_path, "2026-01-01") == 0.0  # no earlier day: nothing to say
    assert unseen_user_share(tmp_path, "2026-01-02") == 0.75  # 4, 4, 5 are new; 1 was seen
    assert unseen_user_share(tmp_path, "2026-01-03") == (0.75 + 0.5) / 2  # 7 new, 6 seen in day 2's source


def test_new_users_are_those_in_no_lake_up_to_the_trained_day(tmp_path):
    import numpy as np
    import pandas as pd

    from bench.guard_rules import users_seen
    from ecat_tasks.storage import Layout

    layout = Layout(tmp_path / "ecat_home")
    days = {"2026-01-01": ([1, 2], [3]), "2026-01-02": ([4], [5, 5]), "2026-01-03": ([6], [])}
    for ds, (target, source) in days.items():
        for domain, users in (("target", target), ("source", source)):
            path = layout.lake(domain, ds)
            path.mkdir(parents=True)
            pd.DataFrame({"user_id": np.array(users, np.int64)}).to_parquet(path / "part-00000.parquet")
    assert [(ds, sorted(seen)) for ds, seen in users_seen(layout, list(days))] == [
        ("2026-01-01", [1, 2, 3]), ("2026-01-02", [1, 2, 3, 4, 5]), ("2026-01-03", [1, 2, 3, 4, 5, 6])]


def test_the_compare_tools_read_every_validation_row_once(monkeypatch, tmp_path):
    """The guard's windows overlap (day 3's window holds days 1-3): pooled as they are, a row is read
    up to guard_window_days times. ``rows=once`` keeps each window's newest day, one part per home;
    ``rows=window`` keeps the windows."""
    import numpy as np

    import bench.guard_rules as gr
    from bench.guard_rules import crossfit_day, decision_rows, fold_of

    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    rows = {d: (np.arange(10 * i, 10 * i + 10), np.tile([0, 1], 5), np.linspace(0, 1, 10) + i) for i, d in enumerate(days)}

    def window(ds, cfg, home, unseen=0.0, window=None):
        held = days[: days.index(ds) + 1][-(window or len(days)):]
        users = np.concatenate([rows[d][0] for d in held])
        labels = np.concatenate([rows[d][1] for d in held])
        score = np.concatenate([rows[d][2] + 100 * days.index(ds) for d in held])  # each day's models score anew
        ages = np.concatenate([np.full(10, len(held) - 1 - k) for k in range(len(held))])
        return users, labels, {"ecat": score, "finetune": -score}, ages

    monkeypatch.setattr(gr, "guard_days", lambda home: days)
    monkeypatch.setattr(gr, "day_scores", window)
    (part,) = decision_rows(tmp_path / "home", None)
    name, users, labels, scores = part
    assert name == "home" and np.array_equal(users, np.arange(30))  # every row once, day by day
    assert np.array_equal(scores["ecat"], np.concatenate([rows[d][2] + 100 * i for i, d in enumerate(days)]))
    parts = decision_rows(tmp_path / "home", None, rows="window")
    assert [p[0] for p in parts] == days and [len(p[1]) for p in parts] == [10, 20, 30]
    with pytest.raises(ValueError, match="rows="):
        decision_rows(tmp_path / "home", None, rows="all")

    # the cross-fit decides on the whole window but scores its choice on the newest day's fold only
    users, labels, scores, ages = window(days[2], None, None)
    fold = fold_of(users, 0)
    for once, newest in ((True, ages == 0), (False, np.ones(len(users), bool))):
        out = crossfit_day(users, labels, scores, ["evidence"], 0.002, splits=1, seed=0, n_resamples=50,
                           ages=ages, once=once)
        assert sorted(r["heldout_rows"] for r in out) == sorted(int(((fold == f) & newest).sum()) for f in (0, 1))
