"""Retrain the shipped small PFN (bayesact/models/pfn/weights/gp_1to5d.pfn) from its config.

    python examples/train_pfn_gp.py                     # one process (CPU or one GPU)
    torchrun --nproc_per_node=4 -m bayesact.pfn_train examples/pfn_gp_1to5d.toml   # data-parallel

Ctrl-C keeps the work (checkpoint in gp_1to5d.ckpt); `python examples/train_pfn_gp.py --resume`
continues it. Writes the PFN, its `.train.json` record (settings, loss per step, timings), and
prints the evaluation of examples/pfn_gp.py.
"""

from __future__ import annotations

import sys

from bayesact.pfn_train import load_config, run

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from pfn_gp import CONFIG, evaluate


def main() -> None:
    pfn, result = run(load_config(CONFIG), resume="--resume" in sys.argv)
    print(f"{result.steps_done} steps, {result.seconds:.0f} s, {result.datasets_per_second:.0f} datasets/s")
    for row in evaluate(pfn):
        print(row)


if __name__ == "__main__":
    main()
