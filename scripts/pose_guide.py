"""`python scripts/pose_guide.py ...` runs the `ilat-pose-guide` command (`ilat_ext.cli.pose_guide`)."""
import sys

from ilat_ext.cli.pose_guide import main

if __name__ == "__main__":
    sys.exit(main())
