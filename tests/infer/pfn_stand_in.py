"""A tiny stand-in for a PFN in the training-loop tests: a mean-pooling set encoder with a
Gaussian head (a conditional neural process), called like a PFN: model(x_train, y_train, x_test)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Normal


class StandInPFN(nn.Module):
    def __init__(self, num_features: int = 1, hidden: int = 32) -> None:
        super().__init__()
        self.hidden = hidden
        d, h = num_features, hidden
        self.encoder = nn.Sequential(nn.Linear(d + 1, h), nn.GELU(), nn.Linear(h, h))
        self.decoder = nn.Sequential(nn.Linear(d + h, h), nn.GELU(), nn.Linear(h, 2))

    def forward(self, x_train: Tensor, y_train: Tensor, x_test: Tensor) -> Normal:
        if x_train.shape[1]:
            summary = self.encoder(torch.cat([x_train, y_train.unsqueeze(-1)], -1)).mean(1)
        else:
            summary = x_test.new_zeros(x_test.shape[0], self.hidden)
        out = self.decoder(torch.cat([x_test, summary.unsqueeze(1).expand(-1, x_test.shape[1], -1)], -1))
        return Normal(out[..., 0], nn.functional.softplus(out[..., 1]) + 1e-3)
