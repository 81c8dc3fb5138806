"""Weight priors, function priors and functional-prior fitting.

- :mod:`bayesact.priors.weight`: priors over an MLP's weights (``WeightPrior``, ``GaussianPrior``,
  ``HierarchicalPrior``);
- :mod:`bayesact.priors.function`: priors over functions (the ``FunctionPrior`` protocol, ``GPPrior``);
- :mod:`bayesact.priors.dataset`: priors over whole datasets (x, y) for training prior-fitted
  networks (``DatasetPrior``, ``GPDatasetPrior``, ``PyroDatasetPrior``, ``HyperDatasetPrior``,
  ``MixtureDatasetPrior``);
- :mod:`bayesact.priors.fitting`: tuning a weight prior so that its network's functions match a function
  prior (``fit_functional_prior``, Wasserstein or NNGP matching, measurement-point samplers).

```python
from bayesact.models import BNN
from bayesact.priors import GPPrior, fit_functional_prior

bnn = BNN(in_dim=1, hidden=(100,), activation="tanh")          # GaussianPrior() by default
target = GPPrior(gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()))
fitted = fit_functional_prior(bnn, target, x_measure, num_iters=200)   # Wasserstein matching
posterior_model = BNN(1, hidden=(100,), prior=fitted)
```
"""

from .dataset import (
    DatasetPrior,
    GPDatasetPrior,
    HyperDatasetPrior,
    MixtureDatasetPrior,
    PyroDatasetPrior,
)
from .fitting import (
    FittedPrior,
    HasActivation,
    HasWeightPrior,
    LipschitzCritic,
    WeightSpacePrior,
    fit_functional_prior,
    mixed_measurement_sampler,
    wasserstein_distance,
)
from .function import FunctionPrior, FunctionPriorWithCovariance, GPPrior
from .weight import GaussianPrior, HierarchicalPrior, WeightPrior

__all__ = [
    "DatasetPrior",
    "FittedPrior",
    "FunctionPrior",
    "FunctionPriorWithCovariance",
    "GPDatasetPrior",
    "GPPrior",
    "GaussianPrior",
    "HasActivation",
    "HasWeightPrior",
    "HierarchicalPrior",
    "HyperDatasetPrior",
    "LipschitzCritic",
    "MixtureDatasetPrior",
    "PyroDatasetPrior",
    "WeightPrior",
    "WeightSpacePrior",
    "fit_functional_prior",
    "mixed_measurement_sampler",
    "wasserstein_distance",
]
