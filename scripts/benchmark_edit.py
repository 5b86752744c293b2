"""`python scripts/benchmark_edit.py ...` runs the `ilat-benchmark-edit` command (`ilat_ext.cli.benchmark_edit`)."""
import sys

from ilat_ext.cli.benchmark_edit import main

if __name__ == "__main__":
    sys.exit(main())
