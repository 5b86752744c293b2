"""`python scripts/build_sdf.py ...` runs the `ilat-build-sdf` command (`ilat_ext.cli.build_sdf`)."""
import sys

from ilat_ext.cli.build_sdf import main

if __name__ == "__main__":
    sys.exit(main())
