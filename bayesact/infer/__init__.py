"""bayesact.infer: vectorized NUTS/HMC for Pyro models, SVI, and ArviZ output.

Layer rule: imports only torch, Pyro, ArviZ and ``bayesact.compilation`` (never another bayesact
package); works for any
Pyro model whose latent sites are continuous.
"""

from bayesact.infer.checkpoint import resume
from bayesact.infer.pfn_training import TrainResult, train_pfn
from bayesact.infer.posterior import Posterior
from bayesact.infer.predictive import predictive
from bayesact.infer.protocols import GibbsHook
from bayesact.infer.sampler import mcmc
from bayesact.infer.sghmc import sghmc
from bayesact.infer.svi import SVIResult, svi
from bayesact.infer.tracing import is_concrete

__all__ = [
    "GibbsHook", "Posterior", "SVIResult", "TrainResult", "is_concrete", "mcmc", "predictive", "resume",
    "sghmc", "svi", "train_pfn",
]
