"""`python scripts/compare.py ...` runs the `ilat-compare` command (`ilat_ext.cli.compare`)."""
import sys

from ilat_ext.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
