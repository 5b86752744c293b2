"""What the two demo commands share: their flags and checks (`ilat-demo-faces`, `ilat-demo-poses`).

Flags the demo does not know are refused; `key=value` words are main.py overrides applied to every
stage of the chain (e.g. `lightning.trainer.limit_val_batches=1`).
"""
import argparse
from typing import List, Optional, Sequence, Tuple

from ilat_ext.cli import ArgumentParser


def demo_parser(kind: str, description: str) -> argparse.ArgumentParser:
    """The parser of `ilat-demo-faces` (kind "faces") or `ilat-demo-poses` ("poses")."""
    faces = kind == "faces"
    parser = ArgumentParser(prog=f"ilat-demo-{kind}", description=description)
    parser.add_argument("--out", default="demo" if faces else "demo_poses", help="output folder")
    parser.add_argument("--steps_scale", type=float, default=1.0,
                        help="multiply every stage's training steps (1.0: the figures in the README and docs/results.md)")
    parser.add_argument("--n_show", type=int, default=8 if faces else 6,
                        help="held-out items in edits.png / poses.png")
    parser.add_argument("--n_compare", type=int, default=16, help="held-out items in the comparison")
    if faces:
        parser.add_argument("--n_score", type=int, default=32,
                            help="held-out faces whose new-strokes edits are scored in edits.md (at least --n_show)")
    parser.add_argument("--fresh", action="store_true", help="retrain every stage even if its run exists")
    return parser


def parse_demo_args(parser: argparse.ArgumentParser,
                    argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    """(flags, main.py overrides); usage errors exit 2 through argparse."""
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unrecognized options: {bad} (main.py overrides for every stage are written key=value)")
    if not args.steps_scale > 0:
        parser.error("--steps_scale must be > 0")
    for flag in ("n_show", "n_compare", "n_score"):
        if getattr(args, flag, 1) < 1:
            parser.error(f"--{flag} must be >= 1")
    return args, overrides
