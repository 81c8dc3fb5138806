"""Weight-prior families and functional-prior fitting.

```python
from bayesact.models import BNN
from bayesact.priors import GPPrior, fit_functional_prior

bnn = BNN(in_dim=1, hidden=(100,), activation="tanh")          # GaussianPrior() by default
target = GPPrior(gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()))
fitted = fit_functional_prior(bnn, target, x_measure, num_iters=200)   # Wasserstein matching
posterior_model = BNN(1, hidden=(100,), prior=fitted)
```
"""

from .base import WeightPrior
from .fitting import FittedPrior, fit_functional_prior
from .gaussian import GaussianPrior
from .gp import GPPrior
from .hierarchical import HierarchicalPrior
from .measurement import mixed_measurement_sampler
from .wasserstein import LipschitzCritic, wasserstein_distance

__all__ = [
    "FittedPrior",
    "GPPrior",
    "GaussianPrior",
    "HierarchicalPrior",
    "LipschitzCritic",
    "WeightPrior",
    "fit_functional_prior",
    "mixed_measurement_sampler",
    "wasserstein_distance",
]
