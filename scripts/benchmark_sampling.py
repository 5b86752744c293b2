"""`python scripts/benchmark_sampling.py ...` runs the `ilat-benchmark-sampling` command (`ilat_ext.cli.benchmark_sampling`)."""
import sys

from ilat_ext.cli.benchmark_sampling import main

if __name__ == "__main__":
    sys.exit(main())
