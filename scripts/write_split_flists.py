"""`python scripts/write_split_flists.py ...` runs the `ilat-write-split-flists` command (`ilat_ext.cli.write_split_flists`)."""
import sys

from ilat_ext.cli.write_split_flists import main

if __name__ == "__main__":
    sys.exit(main())
