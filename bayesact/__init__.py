"""bayesact: Bayesian deep learning on Pyro.

Layers, each importing only from the ones before it (``tests/test_import_graph.py``)::

    activations -> kernels -> priors -> models      (next: models/processes, models/moe)
    infer: a foundation beside them, importing no other bayesact package; any layer may use it.

Prior-fitted networks will sit above ``models`` and ``infer``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bayesact")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
