"""The main job in one command: train the toy face-editing chain on CPU, edit held-out faces with new
strokes, compare Taming / Taming* / iLAT (see `ilat_ext.demo`).

    python scripts/demo_faces.py [--out demo] [--steps-scale 1.0] [--fresh]

Writes <out>/logs/<runs>, <out>/edits.png (input | mask | sketch | Taming | Taming* | iLAT) and
<out>/comparison/{grid.png, metrics.md, metrics.csv}; prints the table. About 15 minutes on 2 CPU
cores; an interrupted demo continues with the stages it already trained.
"""
import argparse

from ilat_ext.demo import run_face_demo


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo", help="output folder (default: demo)")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every stage's training steps (default 1.0: about 15 minutes on 2 CPU cores)")
    parser.add_argument("--n-edit", type=int, default=8, help="faces in the new-strokes grid")
    parser.add_argument("--n-compare", type=int, default=16, help="held-out faces in the comparison")
    parser.add_argument("--fresh", action="store_true", help="retrain every stage even if its run exists")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unrecognized options: {bad} (main.py overrides for every stage are written key=value)")
    if args.steps_scale <= 0:
        parser.error("--steps-scale must be > 0")
    run_face_demo(args.out, args.steps_scale, args.n_edit, args.n_compare, args.fresh, overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
