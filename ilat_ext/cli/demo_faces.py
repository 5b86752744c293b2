"""The main job in one command: train the toy face-editing chain on CPU, edit held-out faces with new
strokes, compare Taming / Taming* / iLAT (`ilat-demo-faces`; see `ilat_ext.apps.demo_faces`).

    ilat-demo-faces [--out demo] [--steps_scale 1.0] [--n_show 8] [--n_score 32] [--n_compare 16] [--fresh]
        [key=value ...]                                   (or python scripts/demo_faces.py ...)

Writes <out>/logs/<runs>, <out>/edits.png (input | mask | sketch | Taming | Taming* | iLAT | ceiling,
the first --n_show faces), <out>/edits.md (how closely the edits of --n_score faces follow the new
strokes) and <out>/comparison/{grid.png, metrics.md, metrics.csv}; prints the tables. About 14
minutes on 2 CPU cores; an interrupted demo continues with the stages it already trained.
key=value words are main.py overrides for every stage.
"""
from typing import Optional, Sequence

from ilat_ext.cli.demos import demo_parser, parse_demo_args


def get_parser():
    return demo_parser("faces", __doc__.split("\n\n")[0])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, overrides = parse_demo_args(get_parser(), argv)
    from ilat_ext.apps.demo_faces import run_face_demo

    run_face_demo(args.out, args.steps_scale, args.n_show, args.n_compare, args.fresh, overrides, log=print,
                  n_score=args.n_score)
    return 0
