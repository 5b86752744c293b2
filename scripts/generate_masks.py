"""`python scripts/generate_masks.py ...` runs the `ilat-generate-masks` command (`ilat_ext.cli.generate_masks`)."""
import sys

from ilat_ext.cli.generate_masks import main

if __name__ == "__main__":
    sys.exit(main())
