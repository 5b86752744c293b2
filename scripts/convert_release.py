"""`python scripts/convert_release.py ...` runs the `ilat-convert-release` command (`ilat_ext.cli.convert_release`)."""
import sys

from ilat_ext.cli.convert_release import main

if __name__ == "__main__":
    sys.exit(main())
