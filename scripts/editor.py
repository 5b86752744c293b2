"""`python scripts/editor.py ...` runs the `ilat-editor` command (`ilat_ext.cli.editor`)."""
import sys

from ilat_ext.cli.editor import main

if __name__ == "__main__":
    sys.exit(main())
