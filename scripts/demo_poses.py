"""The pose task in one command: train the toy pose chain on CPU (TS-VQGAN stage 1 and 2, iLAT,
iLAT*, the vanilla-AR Taming baseline), redraw held-out stick figures in new poses, synthesise a
pose sequence and compare Taming / iLAT* / iLAT (see `ilat_ext.demo.run_pose_demo`).

    python scripts/demo_poses.py [--out demo_poses] [--steps-scale 1.0] [--fresh]

Writes <out>/logs/<runs>, <out>/poses.png, <out>/sequence/{frame_*.png, sequence.gif,
sequence.mp4, strip.png} and <out>/comparison/{grid.png, metrics.md, metrics.csv}.
"""
import argparse

from ilat_ext.demo import run_pose_demo


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_poses", help="output folder (default: demo_poses)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's training steps")
    parser.add_argument("--n-show", type=int, default=6, help="held-out pairs in poses.png")
    parser.add_argument("--n-compare", type=int, default=16, help="held-out pairs in the comparison")
    parser.add_argument("--fresh", action="store_true", help="retrain every stage even if its run exists")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unrecognized options: {bad} (main.py overrides for every stage are written key=value)")
    if args.steps_scale <= 0:
        parser.error("--steps-scale must be > 0")
    run_pose_demo(args.out, args.steps_scale, args.n_show, args.n_compare, args.fresh, overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
