"""Student embeddings initialised from the teacher (``student_init_from_teacher``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ecat_tasks.models.continual import Phase, Recipe, copy_embeddings, fit_day, load_model
from ecat_tasks.models.data import Encoders, Vocabulary
from ecat_tasks.models.networks import RankingModel
from ecat_tasks.storage import Layout

from conftest import tiny_config
from test_models import _frame


def _teacher(tmp_path, cfg) -> tuple[Layout, object]:
    layout = Layout(tmp_path)
    fit_day("teacher", "2026-03-01", cfg, layout,
            Recipe({"kind": "ranking", "embed_dim": cfg.embed_dim, "hidden": [8]}, 0.01, [Phase(_frame(200, id_offset=0), 1)]))
    return layout, load_model(layout.model("teacher", "2026-03-01"))


def test_cold_student_takes_teacher_vocab_and_rows(tmp_path) -> None:
    cfg = tiny_config()
    layout, teacher = _teacher(tmp_path, cfg)
    few = _frame(200).iloc[:10]  # the student trains on a few rows only
    arch = {"kind": "ranking", "embed_dim": cfg.embed_dim, "hidden": [4]}
    # lr 0: the copied rows must be exactly the teacher's after "training"
    fit_day("student", "2026-03-01", cfg, layout, Recipe(arch, 0.0, [Phase(few, 1)], embedding_init=teacher))
    student = load_model(layout.model("student", "2026-03-01"))
    for name, vocab in teacher.encoders.vocabs.items():
        ids = vocab.ids
        s_rows, t_rows = student.encoders.vocabs[name].lookup(ids), vocab.lookup(ids)
        assert (s_rows > 0).all(), name  # every id the teacher knows has its own student row
        s_w = student.model.embedding.tables[name].weight
        t_w = teacher.model.embedding.tables[name].weight
        assert torch.equal(s_w[torch.from_numpy(s_rows)], t_w[torch.from_numpy(t_rows)]), name
    assert np.allclose(student.encoders.dense_mean, teacher.encoders.dense_mean)


def test_warm_start_copies_only_new_rows() -> None:
    torch.manual_seed(0)
    frame = _frame(64)
    enc = Encoders.fit(frame)
    src = RankingModel(enc.vocab_sizes(), 3, 4, [8])

    class Src:
        encoders, model = enc, src

    own = Encoders({n: Vocabulary(v.ids[:5].copy()) for n, v in enc.vocabs.items()}, enc.dense_mean, enc.dense_std)
    old = own.vocab_sizes()
    for n, v in own.vocabs.items():
        v.grow(enc.vocabs[n].ids)
    model = RankingModel(own.vocab_sizes(), 3, 4, [8])
    before = {n: t.weight.detach().clone() for n, t in model.embedding.tables.items()}
    copied = copy_embeddings(model, own, Src, old)
    assert copied == sum(len(own.vocabs[n]) - old[n] for n in old)
    for n, t in model.embedding.tables.items():
        assert torch.equal(t.weight[: old[n]], before[n][: old[n]])  # the student's own rows stay
        ids = own.vocabs[n].ids[old[n] - 1:]
        assert torch.equal(t.weight[old[n]:], src.embedding.tables[n].weight[torch.from_numpy(enc.vocabs[n].lookup(ids))])


def test_target_specialisation_closes_the_day_on_the_target_rows_alone(layout) -> None:
    """student_target_epochs adds a closing phase over exactly the target's training rows
    (no source row), and it changes the student; 0 leaves the one mixed phase."""
    import json

    from conftest import DAYS
    from ecat_tasks.domain_reweight import domain_reweight
    from ecat_tasks.graph_select import graph_select
    from ecat_tasks.models.training import CHECKPOINT
    from ecat_tasks.storage import MANIFEST, file_sha256
    from ecat_tasks.student_distill import student_distill
    from ecat_tasks.teacher_refresh import teacher_refresh

    ds = DAYS[0]
    plain = tiny_config()
    graph_select(ds, plain, layout)
    teacher_refresh(ds, plain, layout)
    domain_reweight(ds, plain, layout)
    runs = {}
    for name, conf in (("joint", {}), ("closing", {"student_target_epochs": 1}),
                       ("finetune", {"student_schedule": "pretrain_finetune"})):
        student_distill(ds, tiny_config(**conf), layout)
        path = layout.model("student", ds)
        runs[name] = (json.loads((path / MANIFEST).read_text()), file_sha256(path / CHECKPOINT))
    (m0, sha0), (m1, sha1), (mf, shaf) = runs["joint"], runs["closing"], runs["finetune"]
    # pretrain_finetune: the weighted source alone once, then the target alone (no mixed phase)
    assert [(p["name"], p["epochs"]) for p in mf["phases"]] == [("pretrain_source", 1), ("finetune_target", plain.student_epochs)]
    assert mf["phases"][1]["rows"] == mf["target_rows"] and mf["phases"][0]["rows"] == m0["phases"][0]["rows"] - m0["target_rows"]
    assert shaf not in (sha0, sha1)
    assert [p["name"] for p in m0["phases"]] == ["target+source"]
    assert [(p["name"], p["epochs"]) for p in m1["phases"]] == [("target+source", 1), ("target_only", 1)]
    assert m1["phases"][1]["rows"] == m1["target_rows"] < m1["phases"][0]["rows"]
    assert [p["batch_size"] for p in m1["phases"]] == [plain.batch_size] * 2  # tiny phases: the rule keeps batch_size
    assert sha0 != sha1
