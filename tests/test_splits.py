"""The three target slices: seeds that really change them, disjointness, and no training on held-out users."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import DAYS, tiny_config
from ecat_tasks.inputs import target_day
from ecat_tasks.splits import VALIDATION, holdout_mask, slice_codes, split_target, time_cutoffs, train_mask

ROOT = Path(__file__).resolve().parents[1]


def _users(n: int = 20_000, days: tuple[str, ...] = ("2026-11-01",)) -> pd.DataFrame:
    """Two rows per user a day, at random times of the day."""
    rng = np.random.default_rng(0)
    ids = rng.choice(10**9, size=n, replace=False).astype(np.int64)
    frames = []
    for k, day in enumerate(days):
        seconds = rng.integers(0, 86_400, 2 * n).astype("timedelta64[s]")
        frames.append(pd.DataFrame({
            "user_id": np.repeat(ids, 2), "sample_id": [f"{day}-{i}" for i in range(2 * n)],
            "ds": np.full(2 * n, np.datetime64(day, "D")).astype("datetime64[us]"),
            "event_ts": np.datetime64(day, "s") + seconds}))
    return pd.concat(frames, ignore_index=True)


def _held_users(frame: pd.DataFrame, seed: int) -> set[int]:
    return set(frame.loc[holdout_mask(frame, tiny_config(seed=seed)), "user_id"])


def test_same_seed_same_users_in_another_process() -> None:
    frame = _users()
    here = sorted(_held_users(frame, 7))
    code = (
        "import sys, numpy as np, pandas as pd; sys.path.insert(0, 'tests'); from conftest import tiny_config; "
        "from ecat_tasks.splits import holdout_mask; "
        "f = pd.DataFrame({'user_id': np.array(sys.stdin.read().split(','), dtype=np.int64)}); "
        "print(','.join(map(str, sorted(set(f.loc[holdout_mask(f, tiny_config(seed=7)), 'user_id'])))))"
    )
    ids = ",".join(map(str, frame["user_id"].unique()))
    out = subprocess.run([sys.executable, "-c", code], input=ids, capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ",".join(map(str, here))
    assert _held_users(frame, 7) == set(here)


def test_different_seeds_hold_out_different_users() -> None:
    frame = _users()
    sets = {seed: _held_users(frame, seed) for seed in (0, 1, 2, 42)}
    n_users = frame["user_id"].nunique()
    for seed, held in sets.items():
        assert abs(len(held) / n_users - 0.2) < 0.02, seed
    for a in sets:
        for b in sets:
            if a < b:
                overlap = len(sets[a] & sets[b]) / len(sets[a])
                # independent 20% draws overlap on about 20% of their users, never all of them
                assert 0.1 < overlap < 0.3, (a, b, overlap)


@pytest.mark.parametrize("by", ["user", "sample"])
@pytest.mark.parametrize("validation_by", ["user", "time"])
def test_slices_partition_the_target_and_keep_users_whole(by: str, validation_by: str) -> None:
    frame = _users()
    cfg = tiny_config(holdout_by=by, holdout_pct=0.2, validation_pct=0.15, validation_by=validation_by)
    train, validation, holdout = split_target(frame, cfg)
    assert len(train) + len(validation) + len(holdout) == len(frame)
    ids = [set(part["sample_id"]) for part in (train, validation, holdout)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert abs(len(holdout) / len(frame) - 0.2) < 0.02 and abs(len(validation) / len(frame) - 0.15) < 0.02
    users = [set(part["user_id"]) for part in (train, validation, holdout)]
    if by == "user":  # cold-start users are whole
        assert not (users[0] & users[2]) and not (users[1] & users[2])
    if by == "user" and validation_by == "user":
        assert not (users[0] & users[1])
    # the cold-start holdout does not move when the validation share or rule changes
    for other in (cfg.replace(validation_pct=0.3), cfg.replace(validation_by={"user": "time", "time": "user"}[validation_by])):
        assert set(split_target(frame, other).holdout["sample_id"]) == ids[2]


def test_time_validation_is_each_days_latest_rows_of_trained_users() -> None:
    """What production scores the next day: the users the models train on, later."""
    frame = _users(days=("2026-11-01", "2026-11-02"))
    cfg = tiny_config(validation_by="time", holdout_pct=0.2, validation_pct=0.15)
    train, validation, holdout = split_target(frame, cfg)
    for day in frame["ds"].unique():
        t, v = train[train["ds"] == day], validation[validation["ds"] == day]
        assert t["event_ts"].max() <= v["event_ts"].min()
        assert abs(len(v) / (frame["ds"] == day).sum() - 0.15) < 0.005
    # most validation users also train (the trained users' later rows), none is held out
    assert len(set(validation["user_id"]) & set(train["user_id"])) > 0.5 * validation["user_id"].nunique()
    assert not set(validation["user_id"]) & set(holdout["user_id"])


def test_time_cut_splits_ties_at_the_share_and_the_seed_moves_them() -> None:
    """A day whose rows all carry one timestamp (a batch load) still validates on validation_pct
    of its rows, chosen by the salted sample hash: never all rows, never none."""
    frame = _users()
    frame["event_ts"] = frame["event_ts"].min()
    cfg = tiny_config(validation_by="time", validation_pct=0.15)
    valid = {seed: set(split_target(frame, cfg.replace(seed=seed)).validation["sample_id"]) for seed in (0, 1)}
    for rows in valid.values():
        assert abs(len(rows) / len(frame) - 0.15) < 0.005
    assert len(valid[0] & valid[1]) < 0.5 * len(valid[0])
    assert valid[0] == set(split_target(frame, cfg.replace(seed=0)).validation["sample_id"])


def test_a_row_without_event_time_is_refused_not_trained() -> None:
    """A missing time would sort first and silently train: the time cut refuses it."""
    frame = _users(n=100)
    frame.loc[5, "event_ts"] = pd.NaT
    with pytest.raises(ValueError, match="1 without event_ts"):
        split_target(frame, tiny_config(validation_by="time"))
    assert len(split_target(frame, tiny_config(validation_by="user")).train) > 0  # the user cut never reads it


def test_streamed_batches_slice_as_their_whole_day() -> None:
    """Training reads the lake in batches: each batch, given its days' cutoffs, keeps exactly the
    rows the whole-day split trains on; a batch whose day has no cutoff is refused."""
    frame = _users(n=5_000, days=("2026-11-01", "2026-11-02")).sample(frac=1.0, random_state=3, ignore_index=True)
    cfg = tiny_config(validation_by="time")
    whole = train_mask(frame, cfg)
    cutoffs = time_cutoffs(frame, cfg)
    batched = np.concatenate([train_mask(frame.iloc[i:i + 777], cfg, cutoffs) for i in range(0, len(frame), 777)])
    assert whole.sum() > 0 and (whole == batched).all()
    one_day = {k: v for k, v in cutoffs.items() if k == min(cutoffs)}
    with pytest.raises(ValueError, match="no validation cutoff for day 2026-11-02"):
        slice_codes(frame, cfg, one_day)
    assert (slice_codes(frame, cfg) == VALIDATION).sum() == (slice_codes(frame, cfg, cutoffs) == VALIDATION).sum()


def test_bad_shares_are_refused() -> None:
    with pytest.raises(ValueError, match="too few target users"):
        tiny_config(holdout_pct=0.5, validation_pct=0.4)


@pytest.mark.parametrize("validation_by", ["time", "user"])
def test_held_out_and_validation_rows_never_train_any_model(layout, monkeypatch, validation_by: str) -> None:
    """Capture every frame a training step hands to training (graph seeds, discriminator,
    teacher, student, each baseline and ablation) and look for the day's held-out users and
    validation rows (whole validation users under validation_by=user)."""
    from ecat_tasks import domain_reweight, graph_select, student_distill, teacher_refresh, train_baselines
    from ecat_tasks.models import student
    from ecat_tasks.config import ABLATIONS, BASELINES
    from ecat_tasks.models.stream import LakeStream, Part

    cfg = tiny_config(baselines=list(BASELINES), ablations=list(ABLATIONS), student_hidden=[32, 16],
                      validation_by=validation_by)
    ds = DAYS[0]
    seen: dict[str, list[pd.DataFrame]] = {}

    def spy(module, name, pick):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            seen.setdefault(f"{module.__name__}.{name}", []).extend(pick(args, kwargs, result))
            return result

        monkeypatch.setattr(module, name, wrapper)

    def rows(data):  # a frame, or streamed parts: every row they would feed to training
        if isinstance(data, pd.DataFrame):
            return data
        parts = [data] if isinstance(data, Part) else list(data)
        columns = ["user_id", "sample_id", "scenario"]
        tables = [t.to_pandas() for t in LakeStream(parts, columns).tables()]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)

    def phases(args, kwargs, _):  # fit_day(name, ds, cfg, layout, recipe, ...)
        return [rows(p.frame) for p in kwargs.get("recipe", args[4] if len(args) > 4 else None).phases]

    for mod in (teacher_refresh, student, train_baselines):  # every caller of fit_day
        spy(mod, "fit_day", phases)
    spy(domain_reweight, "reweight", lambda args, kwargs, _: [rows(args[0])])
    spy(train_baselines, "reweight", lambda args, kwargs, _: [rows(args[0])])
    spy(graph_select, "target_train_table", lambda args, kwargs, result: [result.to_pandas()])

    graph_select.graph_select(ds, cfg, layout)
    teacher_refresh.teacher_refresh(ds, cfg, layout)
    domain_reweight.domain_reweight(ds, cfg, layout)
    student_distill.student_distill(ds, cfg, layout)
    train_baselines.train_baselines(ds, cfg, layout)

    split = target_day(ds, cfg, layout)
    forbidden = set(split.holdout["user_id"]) | (set(split.validation["user_id"]) if validation_by == "user" else set())
    forbidden_rows = set(split.validation["sample_id"])
    assert len(split.holdout) and len(split.validation)
    fits = sum(len(v) for k, v in seen.items() if k.endswith("fit_day"))
    assert fits >= 1 + 1 + len(BASELINES) + len(ABLATIONS) + 1  # teacher, student, each model (finetune: 2 phases)
    target_rows = checked_rows = 0
    for where, frames in seen.items():
        for frame in frames:
            target = frame[frame["scenario"] == cfg.target_scenario] if "scenario" in frame else frame
            target_rows += len(target)
            leaked = forbidden & set(target["user_id"])
            assert not leaked, f"{where} trained on {len(leaked)} held-out/validation users"
            if "sample_id" in target:
                leaked_rows = forbidden_rows & set(target["sample_id"])
                assert not leaked_rows, f"{where} trained on {len(leaked_rows)} validation rows"
                checked_rows += len(target)
    assert target_rows > 0 and checked_rows > 0


def test_the_guard_window_starts_after_a_change_of_the_slice_settings(tmp_path: Path) -> None:
    """A changed seed or slice rule re-slices older days whose rows the chain trained on: the guard
    reads only the days whose student trained under today's settings (a day before the manifests
    recorded them counts as today's)."""
    from ecat_tasks.inputs import days_sliced_as_today
    from ecat_tasks.splits import slice_settings
    from ecat_tasks.storage import Layout, write_manifest

    layout, cfg = Layout(tmp_path), tiny_config()
    days = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    ran = {"2026-03-01": slice_settings(cfg.replace(seed=7)), "2026-03-02": slice_settings(cfg.replace(validation_by="user")),
           "2026-03-03": None, "2026-03-04": slice_settings(cfg)}
    for ds, slices in ran.items():
        directory = layout.model("student", ds)
        directory.mkdir(parents=True)
        write_manifest(directory, "student_distill", ds, **({"slices": slices} if slices else {}))
    assert days_sliced_as_today(days, cfg, layout) == (["2026-03-03", "2026-03-04"], "2026-03-02")
    assert days_sliced_as_today(days, cfg.replace(validation_by="user"), layout) == ([], "2026-03-04")
    assert days_sliced_as_today(days[2:], cfg, layout) == (days[2:], None)


def test_a_hash_share_picks_that_share_and_is_exact_at_the_ends() -> None:
    """A share of 1 (every user scored as new, every row dropped) picked nothing, or failed: its
    float threshold rounded to 2**64, past the hash range."""
    from ecat_tasks.splits import below_share, salted_hash

    hashes = salted_hash(np.arange(20_000), 5)
    assert not below_share(hashes, 0.0).any() and below_share(hashes, 1.0).all()
    assert abs(below_share(hashes, 0.3).mean() - 0.3) < 0.02
    assert (below_share(hashes, 0.3) <= below_share(hashes, 0.6)).all()  # a larger share keeps the smaller one's picks
