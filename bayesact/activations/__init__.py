"""Activation ops: every activation from recent papers, with trainable parameters and a fused path.

```python
from bayesact import activations as A

A.names()                                    # every registered activation
act = A.get("snake", a=torch.full((64,), 0.5))  # per-channel trainable parameter
A.functional.smelu(x, beta=0.5)              # the pure function
A.info("smelu")                              # formula, paper, parameters, smoothness, HMC safety
A.softmax(logits, dim=-1, temperature=0.5)   # probability maps: A.names("probability_map")
A.topk_softmax(logits, 2, temperature=0.5)   # required arguments first; dim, temperature keyword-only
A.get("sparsemax", temperature=0.5)          # a map as a module (trainable temperature, raw_temperature)
```
"""

from . import functional
from ._rational import fit_rational
from .fused import FusedFallbackWarning, fused_available
from .module import Activation, MixtureActivation, get
from .probability import sdm, softmax, sparsemax, stablemax, topk_softmax
from .registry import ActivationInfo, info, names

__all__ = [
    "Activation",
    "ActivationInfo",
    "FusedFallbackWarning",
    "MixtureActivation",
    "fit_rational",
    "functional",
    "fused_available",
    "get",
    "info",
    "names",
    "sdm",
    "softmax",
    "sparsemax",
    "stablemax",
    "topk_softmax",
]
