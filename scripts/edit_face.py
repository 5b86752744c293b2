"""`python scripts/edit_face.py ...` runs the `ilat-edit-face` command (`ilat_ext.cli.edit_face`)."""
import sys

from ilat_ext.cli.edit_face import main

if __name__ == "__main__":
    sys.exit(main())
