"""The PFN transformer: training tokens attend to each other, each query to the training tokens (and itself).

No (n + m) x (n + m) mask is built. In every layer the training tokens run ordinary self-attention
among themselves; the queries attend to the training tokens' keys and values, computed once for any
number of queries. A query's attention to *its own* token is folded into the same
``scaled_dot_product_attention`` call by one extra key: queries get the extra coordinate q_i·k_i,
the extra key is the unit vector on that coordinate (score q_i·k_i / √d_h, the query's own score)
and its value is the unit vector on an extra value coordinate, so the output's extra coordinate is
the weight a_i of the query's own token and o_i = (softmax-weighted train values) + a_i v_i exactly.
Layers are post-LayerNorm with GELU and no dropout; the residual branches (attention output
projection, second feed-forward linear) start at zero (Müller et al., ICLR 2022, as in the authors'
public code).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PFNLayer", "PFNTransformer"]


class PFNLayer(nn.Module):
    """One post-norm transformer layer over (training tokens, query tokens).

    Args:
        emsize: token width.
        nhead: attention heads (``emsize`` must be divisible by it).
        nhid: hidden width of the feed-forward block.
        query_self_attention: queries also attend to their own token (the paper's mask); else
            only to the training tokens (the maintained PFNs library).
    """

    def __init__(self, emsize: int, nhead: int, nhid: int, query_self_attention: bool = True) -> None:
        super().__init__()
        if emsize % nhead:
            raise ValueError(f"'emsize' ({emsize}) must be divisible by 'nhead' ({nhead})")
        self.nhead = nhead
        self.head_dim = emsize // nhead
        self.query_self_attention = query_self_attention
        self.qkv = nn.Linear(emsize, 3 * emsize)
        self.out = nn.Linear(emsize, emsize)
        self.norm1 = nn.LayerNorm(emsize)
        self.ff1 = nn.Linear(emsize, nhid)
        self.ff2 = nn.Linear(nhid, emsize)
        self.norm2 = nn.LayerNorm(emsize)
        for zero in (self.out, self.ff2):  # residual branches start at zero
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)

    def _heads(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, E) -> three (B, H, L, D) tensors."""
        b, length, _ = tokens.shape
        q, k, v = self.qkv(tokens).view(b, length, 3, self.nhead, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _merge(self, heads: Tensor) -> Tensor:
        b, _, length, _ = heads.shape
        return self.out(heads.transpose(1, 2).reshape(b, length, self.nhead * self.head_dim))

    def _pad(self) -> int:
        """Zero columns after the extra coordinate: widths that are multiples of 8 suit the fused kernels."""
        return (8 - (self.head_dim + 1) % 8) % 8

    def attention_cache(self, k_train: Tensor, v_train: Tensor) -> tuple[Tensor, Tensor]:
        """The keys and values every query of this layer attends to, built once from the training
        keys and values (B, H, n, D): with query self-attention, both widened by the extra
        coordinate (and zero padding) and followed by the unit key/value that stands for the
        query's own token."""
        if not self.query_self_attention:
            return k_train, v_train
        b, h, n, d = k_train.shape
        width = d + 1 + self._pad()
        zeros = k_train.new_zeros(b, h, n, width - d)
        unit = k_train.new_zeros(b, h, 1, width)
        unit[..., d] = 1.0
        keys = torch.cat([torch.cat([k_train, zeros], dim=-1), unit], dim=-2)
        values = torch.cat([torch.cat([v_train, zeros], dim=-1), unit], dim=-2)
        return keys, values

    def _query_attention(self, q: Tensor, k: Tensor, v: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Each query over the cached training keys/values, plus its own key/value when enabled."""
        d = self.head_dim
        if not self.query_self_attention:
            if keys.shape[-2] == 0:  # no training tokens: the attention branch contributes nothing
                return torch.zeros_like(q)
            return F.scaled_dot_product_attention(q, keys, values)
        b, h, m, _ = q.shape
        own = (q * k).sum(-1, keepdim=True)  # q_i · k_i, the score of the query's own key
        q_ext = torch.cat([q, own, q.new_zeros(b, h, m, self._pad())], dim=-1)
        out = F.scaled_dot_product_attention(q_ext, keys, values, scale=1.0 / math.sqrt(d))
        return out[..., :d] + out[..., d : d + 1] * v

    def train_step(self, train: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Training tokens (B, n, E) -> (updated tokens, :meth:`attention_cache` of this layer)."""
        q, k, v = self._heads(train)
        if train.shape[1]:
            att = self._merge(F.scaled_dot_product_attention(q, k, v))
        else:  # no training tokens
            att = torch.zeros_like(train)
        return self._feed_forward(self.norm1(train + att)), self.attention_cache(k, v)

    def query_step(self, query: Tensor, cache: tuple[Tensor, Tensor]) -> Tensor:
        """Query tokens (B, m, E) -> updated, given this layer's :meth:`attention_cache`."""
        q, k, v = self._heads(query)
        att = self._merge(self._query_attention(q, k, v, *cache))
        return self._feed_forward(self.norm1(query + att))

    def _feed_forward(self, tokens: Tensor) -> Tensor:
        return self.norm2(tokens + self.ff2(F.gelu(self.ff1(tokens))))


class PFNTransformer(nn.Module):
    """A stack of :class:`PFNLayer` s (the encoder of a PFN, without input encoders and decoder)."""

    def __init__(
        self, emsize: int, nlayers: int, nhead: int, nhid: int, query_self_attention: bool = True
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            PFNLayer(emsize, nhead, nhid, query_self_attention) for _ in range(nlayers)
        )

    def _layers(self) -> list[PFNLayer]:
        return [cast(PFNLayer, layer) for layer in self.layers]

    def encode_train(self, train: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Training tokens (B, n, E) -> every layer's :meth:`PFNLayer.attention_cache`, computed once
        for any number of queries."""
        cache = []
        layers = self._layers()
        for i, layer in enumerate(layers):
            if i == len(layers) - 1:  # the last layer's training outputs are never read
                _, k, v = layer._heads(train)
                cache.append(layer.attention_cache(k, v))
            else:
                train, entry = layer.train_step(train)
                cache.append(entry)
        return cache

    def decode_queries(self, query: Tensor, cache: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Query tokens (B, m, E) -> after the last layer, attending to ``cache`` (:meth:`encode_train`)."""
        for layer, entry in zip(self._layers(), cache, strict=True):
            query = layer.query_step(query, entry)
        return query

    def forward(self, train: Tensor, query: Tensor) -> Tensor:
        """Token sequences (B, n, E) and (B, m, E) -> the query tokens after the last layer (B, m, E)."""
        return self.decode_queries(query, self.encode_train(train))
