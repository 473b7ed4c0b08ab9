"""Workload W3 alone, ASAM (W3): ``spl bench --workload W3 --peers`` (see spl/apps/bench/).

    python benchmarks/bench_asam.py [--device cpu|cuda] [--quick] [--no-scaling] [--out DIR] ...

Every option of ``spl bench`` works here; the figures of benchmarks/RESULTS.md come from ``spl bench``.
"""

import sys

from spl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--workload", "W3", "--peers", "--out", "spl-out/bench-asam", *sys.argv[1:]]))
