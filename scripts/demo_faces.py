"""The main job in one command: train the toy face-editing chain on CPU, edit held-out faces with new
strokes, compare Taming / Taming* / iLAT (see `ilat_ext.demo`).

    python scripts/demo_faces.py [--out demo] [--steps-scale 1.0] [--n-show 8] [--n-score 32]
        [--n-compare 16] [--fresh]

Writes <out>/logs/<runs>, <out>/edits.png (input | mask | sketch | Taming | Taming* | iLAT | ceiling,
the first --n-show faces), <out>/edits.md (how closely the edits of --n-score faces follow the new
strokes) and <out>/comparison/{grid.png, metrics.md, metrics.csv}; prints the tables. About 14
minutes on 2 CPU cores; an interrupted demo continues with the stages it already trained.
"""

import sys

from ilat_ext.demo import main

if __name__ == "__main__":
    sys.exit(main("faces", doc=__doc__))
