"""`python scripts/demo_faces.py ...` runs the `ilat-demo-faces` command (`ilat_ext.cli.demo_faces`)."""
import sys

from ilat_ext.cli.demo_faces import main

if __name__ == "__main__":
    sys.exit(main())
