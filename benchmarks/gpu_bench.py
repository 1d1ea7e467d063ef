"""Does arrowloader keep a GPU fed? Pinned copy bandwidth and a GPT-2-small-shaped model's
step time with arrowloader + CUDAPrefetcher, torch's DataLoader(pin_memory=True) and a
synthetic on-device batch, in one run (see arrowloader.bench.gpu for what is measured).

    python benchmarks/gpu_bench.py                 # the reference corpus, cuda
    python benchmarks/gpu_bench.py --json gpu.json --steps 50 --repeats 5

The same as ``arrowloader bench --device cuda``. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from arrowloader.bench.gpu import add_arguments, run_from_args


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
