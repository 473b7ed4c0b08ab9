"""Workload W1 alone, SLIC (W1): ``spl bench --workload W1 --peers`` (see spl/apps/bench/).

    python benchmarks/bench_slic.py [--device cpu|cuda] [--quick] [--no-scaling] [--out DIR] ...

Every option of ``spl bench`` works here; the figures of benchmarks/RESULTS.md come from ``spl bench``.
"""

import sys

from spl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--workload", "W1", "--peers", "--out", "spl-out/bench-slic", *sys.argv[1:]]))
