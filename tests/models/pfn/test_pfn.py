"""PFN: the attention pattern against an explicit (n + m)² mask, invariances, shapes, inputs, files, ArviZ."""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from bayesact.infer import train_pfn
from bayesact.infer.arviz_io import group_names, read_group
from bayesact.infer.checkpoint import load_checkpoint, save_checkpoint
from bayesact.models import PFN, BarDistribution
from bayesact.models.pfn import PFNLayer, standardization, standardized_borders
from bayesact.models.pfn.pfn import PFN_FORMAT


def random_pfn(num_features: int = 3, dtype: torch.dtype = torch.float32, **kwargs: object) -> PFN:
    """A small PFN with every weight random (a fresh PFN's residual branches are zero, which would
    make the invariance tests pass trivially)."""
    options: dict = {"num_buckets": 20, "emsize": 16, "nlayers": 2, "nhead": 2, **kwargs}
    model = PFN(num_features, **options)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "borders":
                p.normal_(0.0, 0.4)
    return model.to(dtype)


def data(b: int = 2, n: int = 7, m: int = 5, d: int = 3, dtype: torch.dtype = torch.float32):
    x, x_test = torch.randn(b, n, d, dtype=dtype), torch.randn(b, m, d, dtype=dtype)
    return x, torch.randn(b, n, dtype=dtype), x_test


# ---------------------------------------------------------------------- the attention pattern
def split_heads(layer: PFNLayer, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (B, H, L, D) from the layer's public ``qkv`` projection: its E-wide output blocks are
    q, k and v, each the H heads side by side (the in-projection layout of torch.nn.MultiheadAttention)."""
    b, length, e = tokens.shape
    q, k, v = layer.qkv(tokens).split(e, dim=-1)
    return tuple(t.reshape(b, length, layer.nhead, layer.head_dim).transpose(1, 2) for t in (q, k, v))


def merge_heads(layer: PFNLayer, heads: torch.Tensor) -> torch.Tensor:
    """(B, H, L, D) -> the output projection of the heads concatenated, (B, L, E)."""
    b, h, length, d = heads.shape
    return layer.out(heads.transpose(1, 2).reshape(b, length, h * d))


def masked_layer(
    layer: PFNLayer, train: torch.Tensor, query: torch.Tensor, self_attention: bool
) -> torch.Tensor:
    """The paper's formulation: one sequence [train; query] and an (n + m)² boolean mask."""
    n, m = train.shape[1], query.shape[1]
    tokens = torch.cat([train, query], dim=1)
    allowed = torch.zeros(n + m, n + m, dtype=torch.bool)
    allowed[:, :n] = True
    if self_attention:
        allowed[n:, n:] = torch.eye(m, dtype=torch.bool)
    q, k, v = split_heads(layer, tokens)
    scores = q @ k.transpose(-1, -2) / math.sqrt(layer.head_dim)
    att = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1).nan_to_num(0.0) @ v
    h = layer.norm1(tokens + merge_heads(layer, att))
    h = layer.norm2(h + layer.ff2(F.gelu(layer.ff1(h))))
    return h[:, n:]


@pytest.mark.parametrize("self_attention", [True, False])
@pytest.mark.parametrize("n", [0, 1, 6])
def test_query_attention_equals_the_masked_full_sequence(self_attention: bool, n: int) -> None:
    layer = PFNLayer(16, 4, 32, query_self_attention=self_attention).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.5)
    train, query = torch.randn(3, n, 16, dtype=torch.float64), torch.randn(3, 5, 16, dtype=torch.float64)
    _, cache = layer.train_step(train)
    got = layer.query_step(query, cache)
    want = masked_layer(layer, train, query, self_attention)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(got)  # and the gradients of the layer's weights agree
    grads = torch.autograd.grad((got * weights).sum(), list(layer.parameters()), allow_unused=True)
    ref = torch.autograd.grad((want * weights).sum(), list(layer.parameters()), allow_unused=True)
    for p, g, r in zip(layer.parameters(), grads, ref, strict=True):
        zero = torch.zeros_like(p)
        torch.testing.assert_close(zero if g is None else g, zero if r is None else r, rtol=1e-10, atol=1e-10)


def test_training_tokens_attend_only_to_training_tokens() -> None:
    model = random_pfn(dtype=torch.float64)
    x, y, _ = data(dtype=torch.float64)
    layer = model.transformer.layers[0]
    train = model.x_encoder(x) + model.y_encoder(y.unsqueeze(-1))
    new_train, _ = layer.train_step(train)
    q, k, v = split_heads(layer, train)
    scores = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(layer.head_dim), -1)
    h = layer.norm1(train + merge_heads(layer, scores @ v))
    torch.testing.assert_close(new_train, layer.norm2(h + layer.ff2(F.gelu(layer.ff1(h)))))


def test_residual_branches_start_at_zero() -> None:
    model = PFN(2, num_buckets=10, emsize=8, nlayers=2, nhead=2)
    for layer in model.transformer.layers:
        for lin in (layer.out, layer.ff2):
            assert torch.count_nonzero(lin.weight) == 0 and torch.count_nonzero(lin.bias) == 0


# ---------------------------------------------------------------------- invariances
@pytest.mark.parametrize("self_attention", [True, False])
def test_permuting_training_points_leaves_every_query_unchanged(self_attention: bool) -> None:
    model = random_pfn(query_self_attention=self_attention)
    x, y, xt = data(n=30, m=8)
    ref = model(x, y, xt).logits
    for _ in range(3):
        perm = torch.randperm(30)
        torch.testing.assert_close(model(x[:, perm], y[:, perm], xt).logits, ref, rtol=0, atol=1e-5)
    changed = y.clone()
    changed[:, 0] += 1.0  # the output does depend on the training set (so the check can fail)
    assert (model(x, changed, xt).logits - ref).abs().max() > 1e-2


def test_other_queries_do_not_change_a_querys_output() -> None:
    model = random_pfn()
    x, y, xt = data(n=10, m=6)
    ref = model(x, y, xt).logits
    torch.testing.assert_close(model(x, y, xt[:, [3]]).logits[:, 0], ref[:, 3], rtol=0, atol=1e-5)  # removed
    perm = torch.randperm(6)
    torch.testing.assert_close(model(x, y, xt[:, perm]).logits, ref[:, perm], rtol=0, atol=1e-5)  # reordered
    more = torch.cat([xt, torch.randn(2, 40, 3)], dim=1)  # added
    torch.testing.assert_close(model(x, y, more).logits[:, :6], ref, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- shapes and dtypes
def test_shapes_batched_unbatched_and_empty() -> None:
    model = random_pfn()
    x, y, xt = data(b=4, n=7, m=5)
    dist = model(x, y, xt)
    assert isinstance(dist, BarDistribution)
    assert dist.batch_shape == (4, 5) and dist.logits.shape == (4, 5, 20)
    assert dist.log_prob(torch.randn(4, 5)).shape == (4, 5) and dist.sample((3,)).shape == (3, 4, 5)
    single = model(x[1], y[1], xt[1])
    assert single.batch_shape == (5,)
    torch.testing.assert_close(single.logits, dist.logits[1], rtol=0, atol=1e-5)
    assert model(x, y, xt[:, :0]).batch_shape == (4, 0)


def test_empty_training_set_is_the_prior_predictive() -> None:
    model = random_pfn()
    x, y, xt = data(n=0, m=4)
    dist = model(x, y, xt)
    assert dist.batch_shape == (2, 4) and bool(torch.isfinite(dist.logits).all())
    # the same for any batch of datasets: nothing but x_test enters
    torch.testing.assert_close(model(x[:1], y[:1], xt[:1]).logits[0], dist.logits[0])
    assert model(torch.zeros(0, 3), torch.zeros(0), xt[0]).batch_shape == (4,)


def test_float64_end_to_end() -> None:
    model = random_pfn(dtype=torch.float64)
    x, y, xt = data(dtype=torch.float64)
    dist = model(x, y, xt)
    assert dist.logits.dtype == torch.float64 and dist.borders.dtype == torch.float64
    loss = -dist.log_prob(torch.randn(2, 5, dtype=torch.float64)).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    f32 = random_pfn()
    f32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    torch.testing.assert_close(f32(x.float(), y.float(), xt.float()).logits, dist.logits.float(),
                               rtol=1e-4, atol=1e-4)


def test_bf16_autocast_gives_a_float32_loss_close_to_the_float32_one() -> None:
    model = random_pfn()
    x, y, xt = data()
    y_test = torch.randn(2, 5)
    ref = model(x, y, xt).log_prob(y_test)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, y, xt).log_prob(y_test)
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.1  # nats; measured 0.015 with |log q| up to 4.4
    (-low.mean()).backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_training_loss_gradients_reach_every_parameter() -> None:
    model = PFN(3, num_buckets=20, emsize=16, nlayers=2, nhead=2)  # fresh: zero residual branches
    x, y, xt = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):  # at step 0 the zero branches block the training set; after one step it flows
        opt.zero_grad()
        (-model(x, y, xt).log_prob(torch.randn(2, 5)).mean()).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
            if step == 0 and name.startswith("transformer") and name.endswith(("out.weight", "ff2.weight")):
                assert p.grad.abs().sum() > 0, name
            if step == 1:
                assert p.grad.abs().sum() > 0, name
        opt.step()


# ---------------------------------------------------------------------- input handling
def test_fewer_features_are_zero_padded_and_scaled() -> None:
    model = random_pfn(num_features=4)
    x, y, xt = data(d=3)
    padded = model(F.pad(x * 4 / 3, (0, 1)), y, F.pad(xt * 4 / 3, (0, 1)))
    torch.testing.assert_close(model(x, y, xt).logits, padded.logits)
    wide = random_pfn(num_features=2, max_features=4)
    x2 = torch.randn(2, 7, 2)
    torch.testing.assert_close(wide(x2, y, xt[..., :2]).logits,
                               wide(F.pad(x2 * 2, (0, 2)), y, F.pad(xt[..., :2] * 2, (0, 2))).logits)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (lambda x, y, xt: (torch.randn(2, 7, 4), y, torch.randn(2, 5, 4)), "x_train"),  # too many features
        (lambda x, y, xt: (x.index_put((torch.tensor([0]),), torch.tensor(math.nan)), y, xt), "x_train"),
        (lambda x, y, xt: (x, y.index_put((torch.tensor([1]),), torch.tensor(math.nan)), xt), "y_train"),
        (lambda x, y, xt: (x, y, xt.index_put((torch.tensor([1]),), torch.tensor(math.inf))), "x_test"),
        (lambda x, y, xt: (x, y[:1], xt), "y_train"),  # batch sizes
        (lambda x, y, xt: (x, y, xt[:1]), "x_test"),
        (lambda x, y, xt: (x, y[:, :3], xt), "y_train"),  # number of points
        (lambda x, y, xt: (x, y, xt[..., :2]), "x_test"),  # feature counts differ
        (lambda x, y, xt: (x, y.unsqueeze(-1), xt), "y_train"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(change, name: str) -> None:
    model = random_pfn()
    with pytest.raises(ValueError, match=name):
        model(*change(*data()))


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        PFN(2, num_buckets=3, borders=torch.tensor([0.0, 1.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="num_buckets"):
        PFN(2, num_buckets=10, borders=torch.linspace(-1, 1, 5))
    with pytest.raises(ValueError, match="max_features"):
        PFN(4, max_features=2)
    with pytest.raises(ValueError, match="nhead"):
        PFN(2, emsize=10, nhead=3)
    assert PFN(2, num_buckets=None, borders=torch.linspace(-1, 1, 5), emsize=8).num_buckets == 4


def test_standardized_y_is_location_scale_equivariant() -> None:
    model = random_pfn(standardize_y=True)
    x, y, xt = data()
    a, b = 3.0, 2.5
    dist, moved = model(x, y, xt), model(x, a + b * y, xt)
    y_test = torch.randn(2, 5)
    torch.testing.assert_close(moved.log_prob(a + b * y_test), dist.log_prob(y_test) - math.log(b),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(moved.mean, a + b * dist.mean, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["near-constant", "constant", "constant-negative"])
def test_standardized_y_floors_the_scale_of_near_constant_training_sets(
    dtype: torch.dtype, kind: str
) -> None:
    # regression: s = std(y_train) at rounding level (0.3 and the next floats) mapped the borders to
    # m + s·b with coinciding values (ValueError) and threw queries into the tails
    model = random_pfn(dtype=dtype, standardize_y=True)
    base = torch.tensor(-2.0 if kind == "constant-negative" else 0.3, dtype=dtype)
    y = base.repeat(2, 4)
    if kind == "near-constant":
        y[:, 1:] = torch.nextafter(torch.nextafter(base, base + 1), base + 1)  # std ≈ 1 ulp
    x, _, xt = data(b=2, n=4, m=3, dtype=dtype)
    dist = model(x, y, xt)
    mean = y.mean(1, keepdim=True)
    floor = 16 * torch.finfo(dtype).eps * mean.abs() / model.borders.diff().min()
    assert bool((y.std(1, keepdim=True) < floor).all())  # the floor applies to these training sets
    torch.testing.assert_close(dist.borders, mean.unsqueeze(-1) + floor.unsqueeze(-1) * model.borders)
    assert bool((dist.borders.diff(dim=-1) > 0).all())
    # the NLL of a query at the training value: log-density of the standardised bar at 0 minus log s_eff
    nll = -dist.log_prob(mean.expand(2, 3))
    z = BarDistribution(model.borders, dist.logits).log_prob(torch.zeros(2, 3, dtype=dtype))
    torch.testing.assert_close(nll, -z + floor.log(), rtol=1e-3, atol=1e-3)
    # finite, and moderate once the Jacobian log s_eff (≈ -8 in float32, -32 in float64) is taken out
    assert bool(torch.isfinite(nll).all()) and (nll - floor.log()).abs().max() < 10
    nll.mean().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_standardized_y_leaves_well_conditioned_scales_unfloored() -> None:
    model = random_pfn(standardize_y=True)
    x, _, xt = data(b=1, n=3, m=2)
    y = torch.tensor([[1000.0, 1000.5, 999.5]])  # a large offset, a spread above the float32 floor
    dist = model(x, y, xt)
    torch.testing.assert_close(dist.borders, 1000.0 + 0.5 * model.borders.unsqueeze(0).unsqueeze(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_y_std_floor_gives_constant_training_sets_the_prior_scale(dtype: torch.dtype) -> None:
    # regression: a constant training set was standardised by the rounding floor 16·eps·|m|/w_min alone,
    # so a query 1 away from it had log density -1.1e11 (float32) / -3.2e28 (float64); the floor 0.25
    # puts it 1/0.25 = 4 standardised units out: -14.5 to -15.2 measured (seed 0, both dtypes)
    torch.manual_seed(0)
    model = random_pfn(dtype=dtype, standardize_y=True, y_std_floor=0.25)
    x, _, xt = data(b=2, n=4, m=3, dtype=dtype)
    y = torch.full((2, 4), 0.3, dtype=dtype)
    y[1, 1:] = torch.nextafter(torch.tensor(0.3, dtype=dtype), torch.tensor(1.0, dtype=dtype))  # std ≈ ulp
    dist = model(x, y, xt)
    mean = y.mean(1, keepdim=True)
    torch.testing.assert_close(dist.borders, mean.unsqueeze(-1) + 0.25 * model.borders)
    query = mean.expand(2, 3) + 1.0
    log_p = dist.log_prob(query)
    unit = BarDistribution(model.borders, dist.logits).log_prob((query - mean) / 0.25)
    torch.testing.assert_close(log_p, unit - math.log(0.25), rtol=1e-4, atol=1e-4)
    assert bool((log_p > -50).all())
    # without the floor the same query sits deep in the tails (the behaviour before y_std_floor)
    unfloored = random_pfn(dtype=dtype, standardize_y=True)
    unfloored.load_state_dict(model.state_dict())
    assert float(unfloored(x, y, xt).log_prob(query).detach().max()) < -1e4


def test_standardization_is_the_largest_of_the_three_scales() -> None:
    y = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0], [1e4, 1e4 + 0.01, 1e4]],
                     dtype=torch.float64)
    mean, scale = standardization(y, std_floor=0.5, min_width=1e-12)
    torch.testing.assert_close(mean.squeeze(1), y.mean(1))
    rounding = 16 * torch.finfo(torch.float64).eps * float(y[3].mean()) / 1e-12  # 35.5 at m ≈ 1e4
    expected = torch.tensor([1.0, 0.5, 0.5, max(0.5, float(y[3].std()), rounding)], dtype=torch.float64)
    torch.testing.assert_close(scale.squeeze(1), expected)
    assert standardization(y[2:3])[1].item() == 1.0  # all-zero with no floor: 1
    for bad in (-1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="std_floor"):
            standardization(y, std_floor=bad)
    with pytest.raises(ValueError, match="'y'"):
        standardization(y[:, :1])


def test_standardized_borders_floor_is_a_quantile_of_the_dataset_spreads() -> None:
    gen = torch.Generator().manual_seed(0)
    spreads = torch.linspace(0.01, 2.0, 400, dtype=torch.float64)
    y = 3.0 + spreads[:, None] * torch.randn(400, 25, generator=gen, dtype=torch.float64)
    borders, floor, prior_mean, prior_std = standardized_borders(y, 10, floor_quantile=0.05)
    assert floor == pytest.approx(float(torch.quantile(y.std(1), 0.05)), rel=1e-12)
    # the prior predictive's location and scale: mean and std of all draws pooled
    assert prior_mean == pytest.approx(float(y.mean()), rel=1e-12)
    assert prior_std == pytest.approx(float(y.std()), rel=1e-12)
    z = (y - y.mean(1, keepdim=True)) / y.std(1, keepdim=True).clamp(min=floor)
    torch.testing.assert_close(borders, BarDistribution.borders_from_samples(z.reshape(-1), 10))
    # datasets above the floor are standardised exactly, those below keep a spread below 1
    assert bool((z.std(1)[y.std(1) >= floor] - 1).abs().max() < 1e-12)
    assert bool((z.std(1)[y.std(1) < floor] < 1).all()) and int((y.std(1) < floor).sum()) == 20
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="floor_quantile"):
            standardized_borders(y, 10, floor_quantile=bad)
    with pytest.raises(ValueError, match="'y'"):
        standardized_borders(y.reshape(-1), 10)


def test_bad_y_std_floor() -> None:
    for bad in (-1.0, math.inf, math.nan, "1"):
        with pytest.raises(ValueError, match="y_std_floor"):
            PFN(1, num_buckets=4, emsize=8, nhead=2, standardize_y=True, y_std_floor=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="y_std_floor.*standardize_y"):
        PFN(1, num_buckets=4, emsize=8, nhead=2, y_std_floor=0.1)
    for bad in (math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match="y_prior_mean"):
            PFN(1, num_buckets=4, emsize=8, nhead=2, standardize_y=True, y_prior_mean=bad)  # type: ignore[arg-type]
    for bad in (0.0, -1.0, math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match="y_prior_std"):
            PFN(1, num_buckets=4, emsize=8, nhead=2, standardize_y=True, y_prior_std=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="y_prior_mean.*standardize_y"):
        PFN(1, num_buckets=4, emsize=8, nhead=2, y_prior_mean=100.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fewer_than_two_training_points_are_standardised_by_the_prior_location_and_scale(
    dtype: torch.dtype,
) -> None:
    # regression: n = 0 and n = 1 were not standardised, so a model whose borders are in standardised
    # units answered in those units (a prior predictive around 0 for a prior around 100)
    torch.manual_seed(0)
    model = random_pfn(dtype=dtype, standardize_y=True, y_prior_mean=100.0, y_prior_std=5.0)
    identity = random_pfn(dtype=dtype, standardize_y=True)  # the same weights, (μ, σ) = (0, 1)
    identity.load_state_dict(model.state_dict())
    x, y, xt = data(b=2, n=1, m=3, dtype=dtype)
    y = 100.0 + 5.0 * y
    for n in (0, 1):
        dist = model(x[:, :n], y[:, :n], xt)
        torch.testing.assert_close(dist.borders, 100.0 + 5.0 * model.borders.expand(2, 1, -1))
        # the network sees (y_1 - μ) / σ: the logits of the identity model given the standardised y
        ref = identity(x[:, :n], (y[:, :n] - 100.0) / 5.0, xt)
        assert ref.borders.dim() == 1  # the identity map leaves y and the borders as they are
        torch.testing.assert_close(dist.logits, ref.logits)
        z = torch.randn(2, 3, dtype=dtype)
        torch.testing.assert_close(dist.log_prob(100.0 + 5.0 * z), ref.log_prob(z) - math.log(5.0))
    # unbatched inputs too, and a location whose rounding floor exceeds σ
    one = model(x[0, :1], y[0, :1], xt[0])
    torch.testing.assert_close(one.borders.squeeze(0), 100.0 + 5.0 * model.borders)
    far = random_pfn(dtype=dtype, standardize_y=True, y_prior_mean=1e30, y_prior_std=1e-3)
    rounding = 16 * torch.finfo(dtype).eps * 1e30 / far.borders.diff().min()
    want = 1e30 + rounding * far.borders.expand(2, 1, -1)
    torch.testing.assert_close(far(x[:, :0], y[:, :0], xt).borders, want)


class ShiftedNormalPrior:
    """μ ~ N(100, 5²), y_i | μ ~ N(μ, 5²) (x irrelevant): the PPD after n points is
    N((100 + Σy) / (n + 1), 25 (1 + 1/(n + 1))), the prior predictive N(100, 50)."""

    def sample_batch(
        self, batch_size: int, num_points: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mu = 100.0 + 5.0 * torch.randn(batch_size, 1, generator=generator)
        x = torch.rand(batch_size, num_points, 1, generator=generator)
        return x, mu + 5.0 * torch.randn(batch_size, num_points, generator=generator)

    @staticmethod
    def ppd_nll(y_train: torch.Tensor, y_test: torch.Tensor) -> torch.Tensor:
        n = y_train.shape[1]
        var = 25.0 * (1 + 1 / (n + 1))
        mean = (100.0 + y_train.sum(1, keepdim=True)) / (n + 1)
        return 0.5 * math.log(2 * math.pi * var) + (y_test - mean) ** 2 / (2 * var)


def test_a_pfn_trained_on_a_prior_far_from_zero_predicts_n_below_two_in_its_units() -> None:
    """``standardized_borders`` gives (μ, σ) of the pooled prior draws (the N(100, 50) prior
    predictive: within 5 standard errors). ``train_pfn`` calls the model, so training uses the same
    rule: its steps with n = 0 have a loss like the others (3.56 and 3.59 measured, seed 0; the
    entropy of N(100, 50) is 3.37; the former rule gave 2269 and 2290 on those steps). The PFN then
    predicts n = 0 and n = 1 within 0.35 nats of the exact PPD (measured 0.073 and 0.222 after 30 steps
    of 16 datasets), where the former rule with the same weights puts the prior predictive around 0:
    a gap of 2310 nats measured."""
    prior = ShiftedNormalPrior()
    _, y = prior.sample_batch(2000, 10, torch.Generator().manual_seed(0))
    fitted = standardized_borders(y, 30)
    # Var(pooled mean) = 25/2000 + 25/20000 (shared μ per dataset): sd 0.117
    assert abs(fitted.y_prior_mean - 100.0) < 5 * 0.117
    assert abs(fitted.y_prior_std - 50**0.5) < 0.3
    torch.manual_seed(0)
    pfn = PFN(1, num_buckets=None, emsize=16, nlayers=1, nhead=2, standardize_y=True, **fitted._asdict())
    result = train_pfn(pfn, prior, 30, batch_size=16, seq_len=10, seed=0, progress=False)
    assert int(result.num_train.min()) == 0  # the seed draws n = 0 on some steps
    assert float(result.losses.max()) < 6.0
    x, y = prior.sample_batch(2000, 4, torch.Generator().manual_seed(1))
    former = PFN(1, num_buckets=None, emsize=16, nlayers=1, nhead=2, standardize_y=True,
                 borders=fitted.borders, y_std_floor=fitted.y_std_floor)
    former.load_state_dict(pfn.state_dict())
    for n in (0, 1):
        exact = prior.ppd_nll(y[:, :n], y[:, n:])
        dist = pfn.predict(x[:, :n], y[:, :n], x[:, n:])
        assert float((-dist.log_prob(y[:, n:]) - exact).mean()) < 0.35
        assert abs(float(dist.mean.mean()) - 100.0) < 2.0
        assert float((-former.predict(x[:, :n], y[:, :n], x[:, n:]).log_prob(y[:, n:]) - exact).mean()) > 100


# ---------------------------------------------------------------------- inference helpers
def test_predict_is_eval_no_grad_and_chunking_changes_nothing() -> None:
    model = random_pfn()
    model.train()
    x, y, xt = data(b=5, n=9, m=11)
    ref = model(x, y, xt).logits
    out = model.predict(x, y, xt, query_chunk=3, dataset_chunk=2)
    assert model.training and not out.logits.requires_grad
    torch.testing.assert_close(out.logits, ref, rtol=0, atol=1e-5)
    std = random_pfn(standardize_y=True)
    torch.testing.assert_close(std.predict(x, y, xt, dataset_chunk=2).mean, std(x, y, xt).mean)


def test_training_keys_and_values_are_computed_once_for_all_query_chunks(monkeypatch) -> None:
    model = random_pfn()
    calls = []
    encode = model.transformer.encode_train
    monkeypatch.setattr(model.transformer, "encode_train", lambda train: calls.append(1) or encode(train))
    x, y, xt = data(b=2, n=9, m=11)
    model.predict(x, y, xt, query_chunk=2)  # six decoder passes
    assert len(calls) == 1


def test_arviz_posterior_predictive_and_log_predictive_density() -> None:
    model = random_pfn()
    x, y, xt = data(b=2, n=7, m=5)
    y_test = torch.randn(2, 5)
    idata = model.to_arviz(x, y, xt, y_test, num_draws=400, seed=1)
    assert {"posterior_predictive", "observed_data", "log_likelihood"} <= set(group_names(idata))
    draws = read_group(idata, "posterior_predictive")["y"]
    assert draws.shape == (1, 400, 2, 5)
    dist = model.predict(x, y, xt)
    lpd = read_group(idata, "log_likelihood")["y"]
    torch.testing.assert_close(torch.from_numpy(lpd[0, 0]), dist.log_prob(y_test))
    again = model.to_arviz(x, y, xt, num_draws=400, seed=1)
    assert (read_group(again, "posterior_predictive")["y"] == draws).all()  # the seed fixes the draws
    assert set(group_names(model.to_arviz(x[0], y[0], xt[0], num_draws=3))) == {"posterior_predictive"}
    # draws follow the predictive: their mean is within 5 standard errors of the bar mean
    se = (dist.variance / 400).sqrt()
    assert (torch.from_numpy(draws[0].mean(0)) - dist.mean).abs().le(5 * se).all()
    with pytest.raises(ValueError, match="y_test"):
        model.to_arviz(x, y, xt, y_test[:, :2])


# ---------------------------------------------------------------------- files
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_load_round_trip_is_exact(tmp_path, dtype: torch.dtype) -> None:
    model = random_pfn(dtype=dtype, standardize_y=True, query_self_attention=False, y_prior_mean=100.0,
                       y_prior_std=5.0)
    path = tmp_path / "pfn.pt"
    model.save(path)
    loaded = PFN.load(path)
    assert loaded.config() == model.config()
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    x, y, xt = data(dtype=dtype)
    assert torch.equal(loaded.predict(x, y, xt).logits, model.predict(x, y, xt).logits)
    assert (loaded.y_prior_mean, loaded.y_prior_std) == (100.0, 5.0)
    for n in (0, 1):  # the prior's location and scale come back with the file
        assert torch.equal(loaded.predict(x[:, :n], y[:, :n], xt).borders,
                           model.predict(x[:, :n], y[:, :n], xt).borders)


def test_float64_borders_keep_their_precision_in_a_float64_model(tmp_path) -> None:
    # regression: the constructor rounded given borders to float32, so .double() widened the rounded copy
    b64 = torch.tensor([-1.0, 0.1, 1 / 3, 1 + 1e-12, 2.0], dtype=torch.float64)
    assert not torch.equal(b64.float().double(), b64)  # float32 cannot hold these
    model = PFN(1, num_buckets=None, borders=b64, emsize=8, nlayers=1, nhead=2)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # still built in the default dtype
    assert torch.equal(model.borders, b64.float())
    double = model.double()
    assert torch.equal(double.borders, b64)
    x, y, xt = torch.randn(4, 1, dtype=torch.float64), torch.randn(4, dtype=torch.float64), torch.randn(2, 1)
    assert torch.equal(double(x, y, xt.double()).borders, b64)
    assert torch.equal(double.float().borders, b64.float())  # the same module, round-tripped
    assert torch.equal(double.to(torch.float64).borders, b64)
    path = tmp_path / "pfn64.pt"
    double.save(path)
    assert torch.equal(PFN.load(path).borders, b64)
    # borders loaded into the model replace the kept copy (no stale precision comes back)
    other = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0], dtype=torch.float64)
    single = PFN(1, num_buckets=None, borders=b64, emsize=8, nlayers=1, nhead=2)
    single.load_state_dict({**single.state_dict(), "borders": other.float()})
    assert torch.equal(single.double().borders, other)
    close = b64 + 1e-14  # differs from b64 in float64 only: loaded into a float32 model, it still wins
    assert torch.equal(close.float(), b64.float()) and not torch.equal(close, b64)
    single = PFN(1, num_buckets=None, borders=b64, emsize=8, nlayers=1, nhead=2)
    single.load_state_dict({**single.state_dict(), "borders": close})
    assert single.borders.dtype == torch.float32 and torch.equal(single.double().borders, close)


def test_y_std_floor_is_saved_and_files_without_it_load_with_none(tmp_path) -> None:
    model = random_pfn(standardize_y=True, y_std_floor=0.125)
    path = tmp_path / "floor.pfn"
    model.save(path)
    assert PFN.load(path).y_std_floor == 0.125
    # a file written before y_std_floor existed: its config lacks the key
    payload = load_checkpoint(path, PFN_FORMAT)
    del payload["config"]["y_std_floor"]
    save_checkpoint(path, payload)
    old = PFN.load(path)
    assert old.y_std_floor == 0.0 and old.standardize_y
    x, _, xt = data(b=1, n=4, m=2)
    y = torch.full((1, 4), 0.3)
    floor = 16 * torch.finfo(torch.float32).eps * 0.3 / model.borders.diff().min()  # the rounding floor only
    torch.testing.assert_close(old(x, y, xt).borders, 0.3 + floor * model.borders.reshape(1, 1, -1))


def test_files_without_the_prior_location_and_scale_load_with_the_former_rule(tmp_path) -> None:
    model = random_pfn(standardize_y=True, y_prior_mean=100.0, y_prior_std=5.0)
    path = tmp_path / "prior.pfn"
    model.save(path)
    payload = load_checkpoint(path, PFN_FORMAT)
    assert (payload["config"]["y_prior_mean"], payload["config"]["y_prior_std"]) == (100.0, 5.0)
    # a file written before y_prior_mean / y_prior_std existed: its config lacks the keys
    del payload["config"]["y_prior_mean"], payload["config"]["y_prior_std"]
    save_checkpoint(path, payload)
    old = PFN.load(path)
    assert (old.y_prior_mean, old.y_prior_std) == (0.0, 1.0) and old.standardize_y
    x, y, xt = data(b=2, n=1, m=3)
    for n in (0, 1):  # y and the borders as they are for n < 2, as such files were trained
        dist = old(x[:, :n], 100.0 + y[:, :n], xt)
        assert torch.equal(dist.borders, model.borders)
    # datasets of two or more points are unaffected
    x, y, xt = data()
    assert torch.equal(old(x, y, xt).logits, model(x, y, xt).logits)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_pickle_checkpoint_is_refused_without_running_it(tmp_path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": "bayesact.models.pfn/1", "config": _Payload(str(marker))}, fh)
    with pytest.raises(ValueError, match="not a bayesact safe file"):
        PFN.load(path)
    torch.save({"config": _Payload(str(marker))}, path)  # a torch.save pickle, no safe header
    with pytest.raises(ValueError):
        PFN.load(path)
    buffer = io.BytesIO()  # a valid safe-file header (size and checksum right) over a pickled object
    torch.save({"format": "bayesact.models.pfn/1", "config": _Payload(str(marker))}, buffer)
    body = buffer.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode()
    path.write_bytes(b"bayesact-safe/1 sha256=%s size=%d\n" % (digest, len(body)) + body)
    with pytest.raises(ValueError, match="refused"):
        PFN.load(path)
    assert not os.path.exists(marker)


@pytest.mark.gpu
def test_cuda_matches_cpu_and_runs_under_bf16_autocast() -> None:
    model = random_pfn(num_features=3, emsize=64, nhead=4)
    x, y, xt = data(b=3, n=200, m=50)
    ref = model.predict(x, y, xt)
    gpu = model.to("cuda")
    got = gpu.predict(x.cuda(), y.cuda(), xt.cuda())
    torch.testing.assert_close(got.logits.cpu(), ref.logits, rtol=1e-3, atol=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = -gpu(x.cuda(), y.cuda(), xt.cuda()).log_prob(torch.randn(3, 50, device="cuda")).float().mean()
    loss.backward()
    assert bool(torch.isfinite(loss)) and all(bool(torch.isfinite(p.grad).all()) for p in gpu.parameters())
