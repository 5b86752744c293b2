"""`python scripts/benchmark_encoder.py ...` runs the `ilat-benchmark-encoder` command (`ilat_ext.cli.benchmark_encoder`)."""
import sys

from ilat_ext.cli.benchmark_encoder import main

if __name__ == "__main__":
    sys.exit(main())
