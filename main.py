"""Thin entry point: `python main.py --base configs/toy/vqgan.yaml -t` (see ilat_ext/main.py).

Upstream configs that name `main.DataModuleFromConfig`, `main.ImageLogger`, ... resolve to the
same classes, re-exported here.
"""
from ilat_ext.main import *  # noqa: F401,F403
from ilat_ext.main import main

if __name__ == "__main__":
    main()
