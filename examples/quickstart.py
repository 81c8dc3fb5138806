"""The README quickstart, verbatim, on scikit-learn's diabetes data; prints its wall time.

Run: ``python examples/quickstart.py``. ``tests/test_readme.py`` checks that the README's
quickstart block is the block between the ``# --- README`` markers below.
"""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _regression import diabetes_split

torch.manual_seed(0)
start = time.perf_counter()
x_train, y_train, x_test, y_test, _ = diabetes_split(seed=0)

# --- README quickstart
import arviz as az  # noqa: E402

from bayesact.infer import mcmc, predictive  # noqa: E402
from bayesact.models import BNN  # noqa: E402
from bayesact.priors import GPPrior, fit_functional_prior, mixed_measurement_sampler  # noqa: E402

gp = GPPrior.from_data(x_train, y_train, num_iters=150)  # ARD RBF kernel, marginal likelihood
bnn = BNN(x_train.shape[1], hidden=(50,), activation="tanh")
x_measure = mixed_measurement_sampler(x_train, num_points=100)
fit_functional_prior(bnn, gp, x_measure, num_iters=60, critic_steps=30)  # Wasserstein-1 fit
post = mcmc(bnn, x_train, y_train, num_chains=4, num_warmup=150, num_samples=150,
            max_tree_depth=6, compile=True)  # 4 NUTS chains at once; Pyro's MCMC works too
f_test = predictive(bnn, post, x_test, y=None)["f"]  # network outputs at new inputs
print(az.summary(post.to_arviz(), var_names=["noise_std"]))
# --- end

print(f"quickstart: {time.perf_counter() - start:.0f} s")
