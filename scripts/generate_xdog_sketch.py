"""`python scripts/generate_xdog_sketch.py ...` runs the `ilat-generate-xdog-sketch` command (`ilat_ext.cli.generate_xdog_sketch`)."""
import sys

from ilat_ext.cli.generate_xdog_sketch import main

if __name__ == "__main__":
    sys.exit(main())
