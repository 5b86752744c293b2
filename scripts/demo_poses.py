"""The pose task in one command: train the toy pose chain on CPU (TS-VQGAN stage 1 and 2, iLAT,
iLAT*, the vanilla-AR Taming baseline), redraw held-out stick figures in new poses, synthesise a
pose sequence and compare Taming / iLAT* / iLAT (see `ilat_ext.demo.run_pose_demo`).

    python scripts/demo_poses.py [--out demo_poses] [--steps-scale 1.0] [--fresh]

Writes <out>/logs/<runs>, <out>/poses.png, <out>/sequence/{frame_*.png, sequence.gif,
sequence.mp4, strip.png} and <out>/comparison/{grid.png, metrics.md, metrics.csv}.
"""

import sys

from ilat_ext.demo import main

if __name__ == "__main__":
    sys.exit(main("poses", doc=__doc__))
