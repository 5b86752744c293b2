"""`python scripts/demo_poses.py ...` runs the `ilat-demo-poses` command (`ilat_ext.cli.demo_poses`)."""
import sys

from ilat_ext.cli.demo_poses import main

if __name__ == "__main__":
    sys.exit(main())
