"""The per-phase batch size: the rule (Recipe.batch) and the batches a phase really trains in."""

import math

import numpy as np
import pandas as pd
import pytest

from ecat_tasks.config import EcatConfig
from ecat_tasks.models.store import WarmStart
from ecat_tasks.models.student import student_arch
from ecat_tasks.models.trainer import Phase, Recipe, train
from ecat_tasks.spec import spec_of


def _cfg(**overrides: object) -> EcatConfig:
    return EcatConfig.from_mapping(overrides, env={})


@pytest.mark.parametrize(("rows", "batch"), [
    (0, 256), (1_500, 256),              # a MovieLens-sized target phase keeps batch_size
    (131_071, 256), (131_072, 512),      # grows at 2 * min_steps_per_epoch * batch_size rows, in powers of two
    (262_143, 512), (262_144, 1024),
    (620_000, 1024), (50_000_000, 1024),  # a 1M-row day's big phases: capped at max_batch_size
])
def test_batch_rule_grows_with_the_phase_in_powers_of_two_between_its_bounds(rows, batch):
    cfg = _cfg(batch_size=256, max_batch_size=1024, min_steps_per_epoch=256)
    assert Recipe({}, 0.01, []).batch(cfg, rows) == batch


def test_batch_rule_can_be_switched_off_and_leaves_a_recipe_of_its_own_alone():
    recipe = Recipe({}, 0.01, [])
    for off in (256, 64):  # max_batch_size at (or below) batch_size: every phase at batch_size, as before the rule
        cfg = _cfg(batch_size=256, max_batch_size=off)
        assert {recipe.batch(cfg, rows) for rows in (0, 1_000, 10**6, 10**8)} == {256}
    assert recipe.batch(_cfg(batch_size=256, max_batch_size=1000), 10**8) == 1000  # the cap wins over the power of two
    own = Recipe({}, 0.01, [], batch_size=100)  # the teacher's teacher_batch_size
    assert own.batch(_cfg(), 10**8) == own.batch(_cfg(), 10) == 100


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {c: rng.integers(0, 20, n) for c in
            ("user_id", "item_id", "category_id", "user_age", "user_gender", "user_city", "item_brand", "device", "hour")}
    cols.update(item_price=rng.random(n) * 50, user_activity=rng.random(n) * 5, item_popularity=rng.random(n),
                click=rng.integers(0, 2, n), scenario=np.where(rng.random(n) < 0.5, "a", "b"))
    return pd.DataFrame(cols)


@pytest.mark.parametrize(("max_batch", "batches"), [(64, [64, 16]), (16, [16, 16])])
def test_each_phase_trains_in_the_batches_the_rule_gives(max_batch, batches):
    """A 2,000-row phase and a 200-row one: the optimiser's step count is the sum of each
    phase's batches (the last one short), so each phase really trained at its own size."""
    cfg = _cfg(batch_size=16, max_batch_size=max_batch, min_steps_per_epoch=8, torch_threads=1)
    phases = [Phase(_frame(2_000, 0), epochs=2, name="big"), Phase(_frame(200, 1), epochs=1, name="small")]
    trained = train(Recipe(student_arch(cfg), 0.01, phases), WarmStart(), cfg, "m", spec_of(cfg).model_features())
    assert trained.phase_rows == [2_000, 200] and trained.phase_batches == batches
    steps = {float(s["step"]) for s in trained.optimizer.state_dict()["state"].values()}
    assert steps == {2 * math.ceil(2_000 / batches[0]) + math.ceil(200 / batches[1])}
