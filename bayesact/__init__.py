"""bayesact: Bayesian deep learning on Pyro.

Layers, each importing only from the ones before it (checked by ``tests/test_import_graph.py``)::

    activations -> kernels -> priors -> models
    infer        a foundation beside them: imports only compilation; any layer may use it
    pfn_train    the command-line entry of PFN training: the only top-level module that may
                 import every layer (and nothing imports it)
    compilation  the one compile policy (compile, verify against eager, cache, fall back): a
                 foundation every layer may import; it imports no bayesact module

Where each piece lives:

* ``activations``: elementwise activations, the registry, fused kernels, probability maps.
* ``kernels``: dual activations, the NNGP/NTK recursion (one evaluation path), quadrature,
  Monte Carlo estimates, GPyTorch kernels.
* ``priors``: ``weight/`` (weight-prior families), ``function/`` (function-space priors, the
  ``FunctionPrior`` protocol), ``fitting/`` (functional-prior fitting), ``dataset/`` (dataset
  priors: the synthetic tasks a prior-fitted network is trained on).
* ``models``: ``bnn`` and ``likelihoods``; ``processes/`` (Gaussian, Student-t and scale-mixture
  processes); ``moe/`` (mixtures of experts and their gates); ``pfn/`` (the prior-fitted
  network and its ``BarDistribution`` output).
* ``infer``: NUTS/HMC (``sampler``) and SGHMC on one run loop (``run``: phases, Ctrl-C,
  checkpoints, partial results), SVI, predictive, ArviZ I/O, and ``infer.train_pfn``: PFN
  training for any dataset prior and network, generic like the rest of ``infer``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bayesact")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
