import numpy as np
import pandas as pd
import pytest
import torch

from ecat_tasks.models.data import Encoders, Vocabulary
from ecat_tasks.models.distill import adaptive_weights, bernoulli_kl, distillation_loss, hidden_regression
from ecat_tasks.models.networks import RankingModel, StarModel
from ecat_tasks.models.training import CheckpointError, load_checkpoint, save_checkpoint, warm_load


def test_adaptive_weight_is_large_where_teacher_is_right():
    label = torch.tensor([1.0, 1.0, 0.0, 0.0])
    teacher_logit = torch.tensor([4.0, -4.0, -4.0, 4.0])  # right, wrong, right, wrong
    a = adaptive_weights(teacher_logit, label, temperature=1.0)
    assert a.mean().item() == pytest.approx(1.0)
    assert a[0] > 1.0 > a[1] and a[2] > 1.0 > a[3]
    assert a[0].item() == pytest.approx(a[2].item())
    # a higher temperature flattens the weights towards 1
    soft = adaptive_weights(teacher_logit, label, temperature=100.0)
    assert (soft - 1).abs().max() < (a - 1).abs().max()


def test_kl_is_zero_for_equal_predictions_and_positive_otherwise():
    t = torch.tensor([0.5, -1.0, 2.0])
    assert torch.allclose(bernoulli_kl(t, t), torch.zeros(3), atol=1e-6)
    assert (bernoulli_kl(t, t + 1.0) > 0).all()


def test_distillation_loss_reduces_to_weighted_bce_without_kd():
    s, y, w = torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.5])
    proj = torch.nn.Linear(2, 2)
    h = torch.zeros(2, 2)
    plain = (torch.nn.functional.binary_cross_entropy_with_logits(s, y, reduction="none") * w).mean()
    assert torch.allclose(distillation_loss(s, h, y, w, s, h, proj, 0.0, 1.0), plain)
    assert distillation_loss(s, h, y, w, -s, h + 1, proj, 1.0, 1.0) > plain


def test_hidden_term_cannot_be_shrunk_by_the_projection_alone():
    """The teacher's hidden vector is a fixed target: zeroing g leaves the term at mean(h_t^2),
    and no gradient reaches the teacher side."""
    torch.manual_seed(0)
    h_s = torch.randn(6, 4, requires_grad=True)
    h_t = torch.randn(6, 8, requires_grad=True)
    proj = torch.nn.Linear(4, 8)  # student (4) -> teacher (8)
    torch.nn.init.zeros_(proj.weight)
    torch.nn.init.zeros_(proj.bias)
    term = hidden_regression(h_s, h_t, proj)
    assert torch.allclose(term, h_t.detach().pow(2).mean(dim=1))  # a collapsed g cannot zero it
    term.sum().backward()
    assert h_t.grad is None  # stop-gradient on the teacher target
    # the student's representation does get a gradient (through g once g is non-zero)
    proj2 = torch.nn.Linear(4, 8)
    h_s2 = torch.randn(6, 4, requires_grad=True)
    hidden_regression(h_s2, h_t, proj2).sum().backward()
    assert h_s2.grad is not None and h_s2.grad.abs().sum() > 0


def test_distillation_loss_is_the_batch_mean_of_the_documented_per_sample_terms():
    torch.manual_seed(1)
    s, h_s = torch.randn(5), torch.randn(5, 3)
    t, h_t = torch.randn(5) * 3, torch.randn(5, 4)
    y, w = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]), torch.tensor([1.0, 0.5, 2.0, 1.0, 0.1])
    proj = torch.nn.Linear(3, 4)
    a = adaptive_weights(t, y, 2.0)
    per_sample = (w * torch.nn.functional.binary_cross_entropy_with_logits(s, y, reduction="none")
                  + 0.7 * a * ((proj(h_s) - h_t).pow(2).mean(dim=1) + bernoulli_kl(t, s)))
    got = distillation_loss(s, h_s, y, w, t, h_t, proj, 0.7, 2.0)
    assert torch.allclose(got, per_sample.mean())


def test_teacher_logits_pass_unclipped():
    """A confident teacher (logit 20) keeps its confidence: the KL equals the exact value from logits."""
    t, s = torch.tensor([20.0, -20.0]), torch.tensor([5.0, -5.0])
    exact = bernoulli_kl(t, s)
    clipped = bernoulli_kl(torch.logit(torch.sigmoid(t), eps=1e-6), s)
    assert not torch.allclose(exact, clipped)  # what clipping probabilities used to cost
    y, w, h = torch.tensor([1.0, 0.0]), torch.ones(2), torch.zeros(2, 2)
    proj = torch.nn.Linear(2, 2)
    got = distillation_loss(s, h, y, w, t, h, proj, 1.0, 1.0, adaptive=False, use_hidden=False)
    want = (torch.nn.functional.binary_cross_entropy_with_logits(s, y, reduction="none") + exact).mean()
    assert torch.allclose(got, want)


def test_vocabulary_grows_without_moving_known_ids():
    v = Vocabulary()
    v.grow(np.array([50, 10, 30]))
    before = v.lookup(np.array([10, 30, 50, 99]))
    assert before[-1] == 0 and sorted(before[:3]) == [1, 2, 3]
    assert v.grow(np.array([99, 10, 7])) == 2
    after = v.lookup(np.array([10, 30, 50, 99, 7]))
    assert np.array_equal(after[:3], before[:3]) and after[3] > 0 and after[4] > 0 and len(v) == 6


def _frame(n=64, id_offset=0):
    rng = np.random.default_rng(0)
    cols = {n_: rng.integers(0, 20, n) + id_offset for n_ in
            ("user_id", "item_id", "category_id", "user_age", "user_gender", "user_city", "item_brand", "device", "hour")}
    cols.update(item_price=rng.random(n) * 50, user_activity=rng.random(n) * 5, item_popularity=rng.random(n),
                click=rng.integers(0, 2, n), scenario=np.where(rng.random(n) < 0.5, "a", "b"))
    return pd.DataFrame(cols)


def test_models_forward_shapes():
    enc = Encoders.fit(_frame())
    sparse, dense = enc.transform(_frame())
    logit, h = RankingModel(enc.vocab_sizes(), 3, 4, [8, 6])(sparse, dense)
    assert logit.shape == (64,) and h.shape == (64, 6)
    star = StarModel(enc.vocab_sizes(), 3, 4, [8, 6], n_scenarios=4)
    logit, h = star(sparse, dense, scenario=torch.randint(0, 4, (64,)))
    assert logit.shape == (64,) and h.shape == (64, 6)


def test_warm_load_grows_embeddings_and_keeps_old_rows(tmp_path):
    torch.manual_seed(0)
    enc = Encoders.fit(_frame())
    model = RankingModel(enc.vocab_sizes(), 3, 4, [8])
    opt = torch.optim.Adam(model.parameters())
    model(*enc.transform(_frame()))[0].sum().backward()
    opt.step()
    save_checkpoint(tmp_path, model, opt, enc, {"kind": "ranking"})
    state = load_checkpoint(tmp_path, verify=False)  # a bare checkpoint, no partition manifest
    grown = Encoders.from_state(state["encoders"])
    grown.grow(_frame(id_offset=100))  # brand-new ids
    bigger = RankingModel(grown.vocab_sizes(), 3, 4, [8])
    warm_load(bigger, torch.optim.Adam(bigger.parameters()), state, tmp_path)
    old = model.embedding.tables["user_id"].weight
    new = bigger.embedding.tables["user_id"].weight
    assert new.shape[0] > old.shape[0] and torch.equal(new[: old.shape[0]], old)
    assert torch.isfinite(bigger(*grown.transform(_frame(id_offset=100)))[0]).all()


def test_corrupt_or_mismatched_checkpoint_is_a_named_error(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(tmp_path / "model.pt")):
        load_checkpoint(tmp_path, verify=False)
    enc = Encoders.fit(_frame())
    model = RankingModel(enc.vocab_sizes(), 3, 4, [8])
    save_checkpoint(tmp_path, model, torch.optim.Adam(model.parameters()), enc, {"kind": "ranking"})
    other = RankingModel(enc.vocab_sizes(), 3, 4, [16])
    with pytest.raises(CheckpointError, match="model.pt"):
        warm_load(other, torch.optim.Adam(other.parameters()), load_checkpoint(tmp_path, verify=False), tmp_path)
