"""Dataset priors: distributions over whole datasets (x, y), sampled in batches for training
prior-fitted networks (Müller et al., ICLR 2022).

Every prior here has ``sample_batch(batch_size, num_points, generator) -> (x, y)`` with x
(batch_size, num_points, d) and y (batch_size, num_points), reproducible from a
``torch.Generator`` (torch's global random stream is left unchanged):

- :class:`DatasetPrior`: any function prior (``sample_functions(x, n)``) plus observation noise;
- :class:`GPDatasetPrior`: a GP with a stationary kernel, batched Cholesky, hyperpriors;
- :class:`PyroDatasetPrior`: any Pyro model run forward;
- :class:`HyperDatasetPrior`: hyperparameters drawn per dataset, a prior built from them;
- :class:`MixtureDatasetPrior`: a mixture of dataset priors.
"""

from .combine import DatasetSampler, HyperDatasetPrior, MixtureDatasetPrior
from .function import DatasetPrior
from .gp import KERNELS, GPDatasetPrior
from .pyro_model import PyroDatasetPrior

__all__ = [
    "KERNELS",
    "DatasetPrior",
    "DatasetSampler",
    "GPDatasetPrior",
    "HyperDatasetPrior",
    "MixtureDatasetPrior",
    "PyroDatasetPrior",
]
