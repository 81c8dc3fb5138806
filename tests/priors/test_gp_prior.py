"""GPPrior: integer and non-finite inputs, and its repr."""

from __future__ import annotations

import gpytorch
import pytest
import torch

from bayesact.priors import GPPrior


def _rbf(lengthscale: float = 0.7, outputscale: float = 2.0) -> gpytorch.kernels.Kernel:
    kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())
    kernel.base_kernel.lengthscale = lengthscale
    kernel.outputscale = outputscale
    return kernel


def test_integer_inputs_are_converted_to_the_default_float_dtype() -> None:
    """Integer x used to give int64 samples (truncated toward 0: most draws became 0 or ±1). Now the
    samples are in the default float dtype and equal those for the same x given as floats."""
    prior = GPPrior(_rbf())
    x_int = torch.arange(6).unsqueeze(-1)
    torch.manual_seed(0)
    f_int = prior.sample_functions(x_int, 50)
    torch.manual_seed(0)
    f_float = prior.sample_functions(x_int.float(), 50)
    assert f_int.dtype == torch.get_default_dtype() and f_int.shape == (50, 6, 1)
    torch.testing.assert_close(f_int, f_float)
    assert f_int.std().item() == pytest.approx(2.0**0.5, rel=0.15)  # outputscale 2: sd sqrt(2)


def test_float64_inputs_give_float64_samples() -> None:
    x = torch.linspace(-1, 1, 5, dtype=torch.float64).unsqueeze(-1)
    assert GPPrior(_rbf()).sample_functions(x, 3).dtype == torch.float64


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: GPPrior.from_data(torch.tensor([[0.0], [float("nan")], [1.0]]), torch.zeros(3)),
         ValueError, "'x' contains NaN or inf"),
        (lambda: GPPrior.from_data(torch.randn(3, 1), torch.tensor([0.0, float("inf"), 1.0])),
         ValueError, "'y' must be real and finite"),
        (lambda: GPPrior.from_data(torch.randn(3, 1), torch.zeros(3), num_iters=0),
         ValueError, "'num_iters' must be a positive int"),
        (lambda: GPPrior.from_data(torch.randn(3, 1), torch.zeros(3), lr=-1.0),
         ValueError, "'lr' must be a finite number > 0"),
        (lambda: GPPrior(_rbf()).sample_functions(torch.tensor([[float("inf")]]), 2),
         ValueError, "'x' contains NaN or inf"),
        (lambda: GPPrior(_rbf()).sample_functions(torch.zeros(3, 1, dtype=torch.complex64), 2),
         TypeError, "'x' must be a real tensor"),
        (lambda: GPPrior(_rbf()).sample_functions(torch.zeros(3, 1), 0),
         ValueError, "'n' must be a positive int"),
    ],
)  # fmt: skip
def test_bad_input(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_repr_names_kernel_and_hyperparameters() -> None:
    text = repr(GPPrior(_rbf(0.7, 2.0)))
    assert text == "GPPrior(ScaleKernel(RBFKernel), outputscale=2, lengthscale=0.7)"
    torch.manual_seed(0)
    x = torch.randn(15, 2)
    fitted = GPPrior.from_data(x, torch.sin(x[:, 0]), num_iters=5)
    text = repr(fitted)
    assert text.startswith("GPPrior(ScaleKernel(RBFKernel), outputscale=") and "\n" not in text
    assert "lengthscale=[" in text and f"noise_variance={fitted.noise_variance:.3g}" in text
