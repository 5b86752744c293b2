"""`python scripts/eval_tsvqgan.py ...` runs the `ilat-eval-tsvqgan` command (`ilat_ext.cli.eval_tsvqgan`)."""
import sys

from ilat_ext.cli.eval_tsvqgan import main

if __name__ == "__main__":
    sys.exit(main())
