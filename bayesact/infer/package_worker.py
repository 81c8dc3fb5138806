"""Entry point of the detached package builder: ``python -m bayesact.infer.package_worker``
(see :func:`bayesact.infer.packaged.main`; a module of its own, so that ``-m`` does not run a
module the package has already imported)."""

import sys

from bayesact.infer.packaged import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
