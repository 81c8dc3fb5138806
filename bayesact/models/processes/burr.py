"""``BurrXII``: the Burr type XII distribution (scipy's ``burr12``), a prior for σ²."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Size, Tensor
from torch.distributions.utils import broadcast_all

__all__ = ["BurrXII"]


class BurrXII(TorchDistribution):
    """Burr XII on (0, ∞) with density c·d·x^{c−1}(1 + x^c)^{−d−1} (scipy ``burr12(c, d)``).

    Sampled by inverting the CDF F(x) = 1 − (1 + x^c)^{−d}.

    Args:
        c: first shape parameter > 0.
        d: second shape parameter > 0.
    """

    arg_constraints: ClassVar[dict[str, Any]] = {"c": constraints.positive, "d": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, c: Tensor | float, d: Tensor | float, validate_args: bool | None = None) -> None:
        for name, value in (("c", c), ("d", d)):
            if not isinstance(value, Tensor | int | float) or isinstance(value, bool):
                raise TypeError(f"'{name}' must be a positive number or tensor, got {type(value).__name__}")
            if not bool((torch.as_tensor(value) > 0).all()):
                raise ValueError(f"'{name}' must be > 0, got {value!r}")
        self.c, self.d = broadcast_all(c, d)
        super().__init__(self.c.shape, validate_args=validate_args)

    def expand(self, batch_shape: Size | list[int] | tuple[int, ...], _instance: object = None) -> BurrXII:
        shape = Size(batch_shape)
        return BurrXII(self.c.expand(shape), self.d.expand(shape), validate_args=False)

    def rsample(self, sample_shape: Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(Size(sample_shape))
        u = torch.rand(shape, dtype=self.c.dtype, device=self.c.device)
        u = u.clamp(min=torch.finfo(self.c.dtype).tiny)
        # 1 − u is uniform too: x^c = u^{−1/d} − 1
        return torch.exp(torch.log(torch.expm1(-torch.log(u) / self.d)) / self.c)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_x = torch.log(value)
        return (
            torch.log(self.c) + torch.log(self.d) + (self.c - 1) * log_x
            - (self.d + 1) * torch.nn.functional.softplus(self.c * log_x)
        )

    def cdf(self, value: Tensor) -> Tensor:
        return -torch.expm1(-self.d * torch.nn.functional.softplus(self.c * torch.log(value)))
