"""`python scripts/quantize_dataset.py ...` runs the `ilat-quantize-dataset` command (`ilat_ext.cli.quantize_dataset`)."""
import sys

from ilat_ext.cli.quantize_dataset import main

if __name__ == "__main__":
    sys.exit(main())
