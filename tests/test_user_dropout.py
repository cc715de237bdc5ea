"""Training rows that stand for an unseen user (``user_dropout``): the unseen-id row learns."""

from __future__ import annotations

import numpy as np
import torch

from ecat_tasks.models.continual import Phase, Recipe, fit_day, load_model
from ecat_tasks.models.data import Encoders, Vocabulary, drop_user_ids
from ecat_tasks.storage import Layout

from conftest import tiny_config
from test_models import _frame


def test_dropped_rows_take_the_unseen_row_at_the_rate_and_are_stable() -> None:
    frame = _frame(4000)
    frame["user_id"] = np.arange(len(frame)) + 1_000  # distinct rows, so the share is the rate's
    enc = Encoders.fit(frame)
    col = enc.spec.sparse_names.index("user_id")
    own = enc.transform(frame)[0][:, col]
    first = enc.transform(frame)[0]
    data = type("Data", (), {"sparse": first})()
    n = drop_user_ids(data, frame, enc, 0.25, seed=7)
    dropped = (first[:, col] == 0).numpy()
    assert n == dropped.sum() and 0.2 < n / len(frame) < 0.3
    assert (own[~torch.from_numpy(dropped)] > 0).all()  # the others keep their own rows
    others = [i for i in range(first.shape[1]) if i != col]
    assert torch.equal(first[:, others], enc.transform(frame)[0][:, others])  # only the user column moves
    # the same rows whatever the order they come in, and other rows under another seed
    again = enc.transform(frame.iloc[::-1])[0]
    drop_user_ids(type("Data", (), {"sparse": again})(), frame.iloc[::-1], enc, 0.25, seed=7)
    assert np.array_equal((again[:, col] == 0).numpy()[::-1], dropped)
    other = enc.transform(frame)[0]
    drop_user_ids(type("Data", (), {"sparse": other})(), frame, enc, 0.25, seed=8)
    assert not np.array_equal((other[:, col] == 0).numpy(), dropped)
    assert drop_user_ids(type("Data", (), {"sparse": enc.transform(frame)[0]})(), frame, enc, 0.0, seed=7) == 0


def test_dropped_rows_take_the_hash_bucket_an_unseen_user_would() -> None:
    vocab = Vocabulary(np.array([5, 6]), hash_buckets=4)
    unseen = np.array([5, 6, 99])
    assert np.array_equal(vocab.unseen_rows(unseen)[2:], vocab.lookup(np.array([99])))
    assert (vocab.unseen_rows(unseen) >= 1).all() and (vocab.unseen_rows(unseen) <= 4).all()


def _unseen_row(tmp_path, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = tiny_config(user_dropout=rate)
    layout = Layout(tmp_path / f"r{rate}")
    arch = {"kind": "ranking", "embed_dim": cfg.embed_dim, "hidden": [8]}
    torch.manual_seed(0)
    fit_day("student", "2026-03-01", cfg, layout, Recipe(arch, 0.05, [Phase(_frame(600), 2)]))
    model = load_model(layout.model("student", "2026-03-01"))
    return model.model.embedding.tables["user_id"].weight[0].detach().clone(), model.score(_frame(600), "click")


def test_the_unseen_user_row_trains_only_with_dropout(tmp_path) -> None:
    cfg = tiny_config()
    layout = Layout(tmp_path / "init")
    arch = {"kind": "ranking", "embed_dim": cfg.embed_dim, "hidden": [8]}
    fit_day("student", "2026-03-01", cfg, layout, Recipe(arch, 0.0, [Phase(_frame(600), 1)]))  # lr 0: the initial row
    initial = load_model(layout.model("student", "2026-03-01")).model.embedding.tables["user_id"].weight[0]
    without, _ = _unseen_row(tmp_path, 0.0)
    with_dropout, _ = _unseen_row(tmp_path, 0.3)
    assert torch.equal(without, initial)  # no training row reaches it
    assert not torch.allclose(with_dropout, initial)
    again, _ = _unseen_row(tmp_path / "again", 0.3)
    assert torch.equal(again, with_dropout)  # deterministic given the seed
