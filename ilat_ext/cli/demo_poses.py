"""The pose task in one command: train the toy pose chain on CPU (TS-VQGAN stage 1 and 2, iLAT,
iLAT*, the vanilla-AR Taming baseline), redraw held-out stick figures in new poses, synthesise a
pose sequence and compare Taming / iLAT* / iLAT (`ilat-demo-poses`; see `ilat_ext.apps.demo_poses`).

    ilat-demo-poses [--out demo_poses] [--steps_scale 1.0] [--n_show 6] [--n_compare 16] [--fresh]
        [key=value ...]                                   (or python scripts/demo_poses.py ...)

Writes <out>/logs/<runs>, <out>/poses.png, <out>/sequence/{frame_*.png, sequence.gif,
sequence.mp4, strip.png} and <out>/comparison/{grid.png, metrics.md, metrics.csv}.
key=value words are main.py overrides for every stage.
"""
from typing import Optional, Sequence

from ilat_ext.cli.demos import demo_parser, parse_demo_args


def get_parser():
    return demo_parser("poses", __doc__.split("\n\n")[0])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, overrides = parse_demo_args(get_parser(), argv)
    from ilat_ext.apps.demo_poses import run_pose_demo

    run_pose_demo(args.out, args.steps_scale, args.n_show, args.n_compare, args.fresh, overrides, log=print)
    return 0
