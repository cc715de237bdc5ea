"""Ranking networks built from the feature spec: the teacher/student tower and STAR.

Every network embeds each sparse feature (row 0 = unseen id), appends the normalised dense
features and runs an MLP. ``forward`` returns ``(logit, hidden)``: the last hidden layer is
what distillation aligns and what the domain classifier reads (the teacher's).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class FeatureEmbedding(nn.Module):
    """One embedding table per sparse feature; tables can grow for new ids (warm start)."""

    def __init__(self, vocab_sizes: dict[str, int], embed_dim: int, n_dense: int) -> None:
        super().__init__()
        self.names = list(vocab_sizes)
        self.embed_dim = embed_dim
        self.tables = nn.ModuleDict({n: nn.Embedding(size, embed_dim) for n, size in vocab_sizes.items()})
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=0.05)
        self.out_dim = len(self.names) * embed_dim + n_dense

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        fields = self.fields(sparse)
        return torch.cat([fields.flatten(1), dense], dim=1)

    def fields(self, sparse: torch.Tensor) -> torch.Tensor:
        """Field embeddings stacked as [B, F, D]."""
        return torch.stack([self.tables[n](sparse[:, j]) for j, n in enumerate(self.names)], dim=1)

    @torch.no_grad()
    def grow(self, vocab_sizes: dict[str, int], generator: torch.Generator | None = None) -> None:
        """Extend tables to new sizes, keeping every existing row."""
        for n, size in vocab_sizes.items():
            old = self.tables[n]
            if size <= old.num_embeddings:
                continue
            new = nn.Embedding(size, self.embed_dim).to(old.weight.device)
            new.weight.normal_(0.0, 0.05, generator=generator)
            new.weight[: old.num_embeddings] = old.weight
            self.tables[n] = new


def mlp(in_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()]
        in_dim = h
    return nn.Sequential(*layers)


def pairwise_products(fields: torch.Tensor) -> torch.Tensor:
    """Inner products of every pair of field embeddings (PNN): [B, F, D] -> [B, F*(F-1)/2].

    MLPs learn multiplicative user-item affinity poorly from little data; explicit products
    hand it to them, which matters most for the thin target domain.
    """
    n = fields.shape[1]
    i, j = torch.triu_indices(n, n, offset=1, device=fields.device)
    # One batched Gram matrix and a column gather: ``fields[:, i] * fields[:, j]`` builds two
    # [B, P, D] copies by advanced indexing, whose backward (a deterministic index_put with
    # accumulation) was a third of the training step's time on CPU.
    gram = torch.bmm(fields, fields.transpose(1, 2)).flatten(1)
    return gram.index_select(1, i * n + j)


class RankingModel(nn.Module):
    """Embeddings + pairwise products + MLP tower + logit: teacher, student, most baselines.

    With ``n_scenarios`` > 0 the scenario is one more sparse field (its own embedding table,
    ``scenario`` index per sample), so it enters the products with every other field: the
    ``mixed_scenario`` baseline.
    """

    def __init__(self, vocab_sizes: dict[str, int], n_dense: int, embed_dim: int, hidden: Sequence[int],
                 n_scenarios: int = 0) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(vocab_sizes, embed_dim, n_dense)
        self.scenario_embedding = nn.Embedding(n_scenarios, embed_dim) if n_scenarios else None
        if self.scenario_embedding is not None:
            nn.init.normal_(self.scenario_embedding.weight, std=0.05)
        n = len(vocab_sizes) + (1 if n_scenarios else 0)
        self.tower = mlp(self.embedding.out_dim + (embed_dim if n_scenarios else 0) + n * (n - 1) // 2, hidden)
        self.head = nn.Linear(hidden[-1], 1)
        self.hidden_dim = hidden[-1]

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, scenario: torch.Tensor | None = None,
                **_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fields = self.embedding.fields(sparse)
        if self.scenario_embedding is not None:
            if scenario is None:
                raise ValueError("this model takes the scenario as a feature: it needs the scenario index of every sample")
            fields = torch.cat([fields, self.scenario_embedding(scenario).unsqueeze(1)], dim=1)
        x = torch.cat([fields.flatten(1), dense, pairwise_products(fields)], dim=1)
        h = self.tower(x)
        return self.head(h).squeeze(1), h


class StarLinear(nn.Module):
    """STAR's star-topology layer: weight = shared * scenario-specific, bias = shared + specific."""

    def __init__(self, in_dim: int, out_dim: int, n_scenarios: int) -> None:
        super().__init__()
        self.shared_w = nn.Parameter(torch.empty(in_dim, out_dim))
        nn.init.xavier_uniform_(self.shared_w)
        self.shared_b = nn.Parameter(torch.zeros(out_dim))
        self.spec_w = nn.Parameter(torch.ones(n_scenarios, in_dim, out_dim))
        self.spec_b = nn.Parameter(torch.zeros(n_scenarios, out_dim))

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        # one matmul per scenario present in the batch (few), not a [B, in, out] weight tensor
        out = x.new_empty(x.shape[0], self.shared_w.shape[1])
        for s in torch.unique(scenario).tolist():
            rows = scenario == s
            out[rows] = x[rows] @ (self.shared_w * self.spec_w[s]) + self.spec_b[s]
        return out + self.shared_b


class StarModel(nn.Module):
    """Multi-scenario baseline (STAR-style): shared plus scenario-specific parameters."""

    def __init__(self, vocab_sizes: dict[str, int], n_dense: int, embed_dim: int, hidden: Sequence[int],
                 n_scenarios: int) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(vocab_sizes, embed_dim, n_dense)
        self.scenario_embedding = nn.Embedding(n_scenarios, embed_dim)
        dims = [self.embedding.out_dim + embed_dim, *hidden]
        self.layers = nn.ModuleList(StarLinear(a, b, n_scenarios) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(hidden[-1], 1)
        self.hidden_dim = hidden[-1]

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, scenario: torch.Tensor | None = None,
                **_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if scenario is None:
            raise ValueError("StarModel needs the scenario index of every sample")
        h = torch.cat([self.embedding(sparse, dense), self.scenario_embedding(scenario)], dim=1)
        for layer in self.layers:
            h = torch.relu(layer(h, scenario))
        return self.head(h).squeeze(1), h
