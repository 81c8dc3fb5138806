"""Run under torchrun by tests/infer/test_pfn_training.py: a few data-parallel train_pfn steps (gloo),
rank 0 saves the parameters and losses to the file named on the command line."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from bayesact.infer.pfn_training import train_pfn
from bayesact.priors.dataset import GPDatasetPrior
from tests.infer.pfn_stand_in import StandInPFN


def main(out: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    torch.manual_seed(0)  # DDP broadcasts rank 0's parameters anyway
    model = StandInPFN(1)
    prior = GPDatasetPrior(1, lengthscale=0.3, noise_std=0.1, dtype=torch.float32)
    result = train_pfn(model, prior, 4, batch_size=8, seq_len=12, lr=1e-2, warmup=1, seed=7, progress=False)
    if dist.get_rank() == 0:
        torch.save({"params": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "losses": result.losses}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
