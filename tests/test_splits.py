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
from ecat_tasks.splits import split_target

ROOT = Path(__file__).resolve().parents[1]


def _users(n: int = 20_000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ids = rng.choice(10**9, size=n, replace=False).astype(np.int64)
    return pd.DataFrame({"user_id": np.repeat(ids, 2), "sample_id": [f"s{i}" for i in range(2 * n)]})


def _held_users(frame: pd.DataFrame, seed: int) -> set[int]:
    return set(split_target(frame, tiny_config(seed=seed)).holdout["user_id"])


def test_same_seed_same_users_in_another_process() -> None:
    frame = _users()
    here = sorted(_held_users(frame, 7))
    code = (
        "import sys, numpy as np, pandas as pd; sys.path.insert(0, 'tests'); from conftest import tiny_config; "
        "from ecat_tasks.splits import split_target; "
        "f = pd.DataFrame({'user_id': np.array(sys.stdin.read().split(','), dtype=np.int64)}); "
        "print(','.join(map(str, sorted(set(split_target(f, tiny_config(seed=7)).holdout['user_id'])))))"
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
def test_slices_partition_the_target_and_keep_users_whole(by: str) -> None:
    frame = _users()
    cfg = tiny_config(holdout_by=by, holdout_pct=0.2, validation_pct=0.15)
    train, validation, holdout = split_target(frame, cfg)
    assert len(train) + len(validation) + len(holdout) == len(frame)
    ids = [set(part["sample_id"]) for part in (train, validation, holdout)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert abs(len(holdout) / len(frame) - 0.2) < 0.02 and abs(len(validation) / len(frame) - 0.15) < 0.02
    if by == "user":
        users = [set(part["user_id"]) for part in (train, validation, holdout)]
        assert not (users[0] & users[1]) and not (users[0] & users[2]) and not (users[1] & users[2])
    # the cold-start holdout does not move when the validation share changes
    wider = split_target(frame, cfg.replace(validation_pct=0.3))
    assert set(wider.holdout["sample_id"]) == ids[2]


def test_bad_shares_are_refused() -> None:
    with pytest.raises(ValueError, match="too few target users"):
        tiny_config(holdout_pct=0.5, validation_pct=0.4)


def test_held_out_and_validation_users_never_train_any_model(layout, monkeypatch) -> None:
    """Capture every frame a training step hands to training (graph seeds, discriminator,
    teacher, student, each baseline and ablation) and look for the day's evaluation users."""
    from ecat_tasks import domain_reweight, graph_select, student_distill, teacher_refresh, train_baselines
    from ecat_tasks.models import student
    from ecat_tasks.config import ABLATIONS, BASELINES
    from ecat_tasks.models.stream import LakeStream, Part

    cfg = tiny_config(baselines=list(BASELINES), ablations=list(ABLATIONS), student_hidden=[32, 16])
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
        tables = [t.to_pandas() for t in LakeStream(parts, ["user_id", "scenario"]).tables()]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["user_id", "scenario"])

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
    forbidden = set(split.holdout["user_id"]) | set(split.validation["user_id"])
    assert len(split.holdout) and len(split.validation)
    fits = sum(len(v) for k, v in seen.items() if k.endswith("fit_day"))
    assert fits >= 1 + 1 + len(BASELINES) + len(ABLATIONS) + 1  # teacher, student, each model (finetune: 2 phases)
    target_rows = 0
    for where, frames in seen.items():
        for frame in frames:
            target = frame[frame["scenario"] == cfg.target_scenario] if "scenario" in frame else frame
            target_rows += len(target)
            leaked = forbidden & set(target["user_id"])
            assert not leaked, f"{where} trained on {len(leaked)} held-out/validation users"
    assert target_rows > 0
