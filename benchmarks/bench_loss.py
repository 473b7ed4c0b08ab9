"""Workload W2 alone, pooling and the consistency loss (W2): ``spl bench --workload W2 --peers`` (see spl/apps/bench/).

    python benchmarks/bench_loss.py [--device cpu|cuda] [--quick] [--no-scaling] [--out DIR] ...

Every option of ``spl bench`` works here; the figures of benchmarks/RESULTS.md come from ``spl bench``.
"""

import sys

from spl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--workload", "W2", "--peers", "--out", "spl-out/bench-loss", *sys.argv[1:]]))
