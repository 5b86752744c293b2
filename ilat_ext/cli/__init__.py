"""The command-line front ends: one module per console script, each with `main(argv=None) -> int`.

    ilat-edit-face         ilat_ext.cli.edit_face          ilat-eval-tsvqgan         ilat_ext.cli.eval_tsvqgan
    ilat-compare           ilat_ext.cli.compare            ilat-quantize-dataset     ilat_ext.cli.quantize_dataset
    ilat-pose-guide        ilat_ext.cli.pose_guide         ilat-generate-masks       ilat_ext.cli.generate_masks
    ilat-demo-faces        ilat_ext.cli.demo_faces         ilat-generate-xdog-sketch ilat_ext.cli.generate_xdog_sketch
    ilat-demo-poses        ilat_ext.cli.demo_poses         ilat-write-split-flists   ilat_ext.cli.write_split_flists
    ilat-build-sdf         ilat_ext.cli.build_sdf          ilat-benchmark-encoder    ilat_ext.cli.benchmark_encoder
    ilat-benchmark-sampling  ilat_ext.cli.benchmark_sampling  ilat-benchmark-edit     ilat_ext.cli.benchmark_edit
    ilat-convert-release     ilat_ext.cli.convert_release     ilat-editor             ilat_ext.cli.editor

`scripts/<name>.py` are thin wrappers over the same `main`s. The front ends parse and check their
arguments, call the library (`ilat_ext.apps`, `ilat_ext.data`, ...) and print; the library itself
reports through return values, `logging` and `warnings`.

This module holds what they share, and imports only the standard library, so that checks made
before the heavy imports (`report_missing`) stay cheap:

  * `ArgumentParser`: one flag spelling. The underscore spelling is canonical (`--top_k`,
    `--steps_scale`, `--unsafe_load`), the hyphenated one an alias (`--top-k`), and both set the
    same attribute. `BooleanFlag` is `--greedy` / `--no_greedy` (alias `--no-greedy`).
  * `add_sampling_arguments` / `sampling_options`: the sampling flags of the scripts that sample
    (`--greedy`/`--no_greedy`, `--top_k`, `--temperature`, `--seed`, `--device`).
  * `report_missing`: "error: --FLAG WHAT not found: PATH" and exit code 2 for a missing input.

    >>> p = ArgumentParser(prog="x")
    >>> _ = p.add_argument("--top-k", type=int)
    >>> p.parse_args(["--top_k", "3"]) == p.parse_args(["--top-k", "3"])
    True
    >>> p.format_usage().strip()
    'usage: x [-h] [--top_k TOP_K]'
"""
import argparse
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Tuple

__all__ = ["ArgumentParser", "BooleanFlag", "add_photo_arguments", "add_sampling_arguments",
           "check_photo_arguments", "check_sampling_arguments", "flag_spellings", "report_missing",
           "resolve_device", "sampling_options"]

DEFAULT_MAX_PIXELS = 50_000_000   # ilat_ext.apps.photo_io.DEFAULT_MAX_PIXELS (here so parsing needs no numpy)


def flag_spellings(option: str) -> List[str]:
    """["--a_b", "--a-b"] for "--a_b" or "--a-b" (canonical first); other option strings unchanged."""
    if not option.startswith("--") or ("_" not in option[2:] and "-" not in option[2:]):
        return [option]
    body = option[2:]
    return ["--" + body.replace("-", "_"), "--" + body.replace("_", "-")]


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` that registers both spellings of every multi-word long option, the
    underscore one first (it names the attribute and is the one shown in usage lines)."""

    def add_argument(self, *args, **kwargs):
        spellings: List[str] = []
        for option in args:
            spellings += [s for s in flag_spellings(option) if s not in spellings]
        return super().add_argument(*spellings, **kwargs)


class BooleanFlag(argparse.Action):
    """`--flag` sets True, `--no_flag` (alias `--no-flag`) False: `argparse.BooleanOptionalAction`
    with the project's flag spelling."""

    def __init__(self, option_strings, dest, default=None, required=False, help=None):
        strings: List[str] = []
        for option in option_strings:
            negated = [option] if not option.startswith("--") else [option] + flag_spellings("--no_" + option[2:])
            strings += [s for s in negated if s not in strings]
        super().__init__(strings, dest, nargs=0, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith(("--no_", "--no-")))

    def format_usage(self) -> str:
        return " | ".join(s for s in self.option_strings if "-" not in s[2:])


def add_sampling_arguments(parser: argparse.ArgumentParser, *, greedy: Optional[bool] = None,
                           temperature: Optional[float] = None, seed: Optional[int] = None,
                           seed_help: str = "seed of the draw (implies sampling)") -> None:
    """The sampling flags: --greedy/--no_greedy, --top_k, --temperature, --seed, --device.

    Defaults None mean "implied": greedy unless --top_k, --temperature or --seed asks for a draw
    (`sampling_options`). A script whose --seed also seeds something else (compare's toy data)
    passes `greedy=True` and its `seed` default."""
    parser.add_argument("--greedy", action=BooleanFlag, default=greedy,
                        help="top-1 decoding (the paper's default); --no_greedy draws with --top_k / --temperature"
                             + ("" if greedy is not None else " (default: greedy unless one of those is given)"))
    parser.add_argument("--top_k", type=int, default=None, help="draw from the k most likely codes")
    parser.add_argument("--temperature", type=float, default=temperature,
                        help="sampling temperature" + ("" if temperature is None else f" (default {temperature})"))
    parser.add_argument("--seed", type=int, default=seed, help=seed_help)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")


def add_photo_arguments(parser: argparse.ArgumentParser, *, masks: bool = True) -> None:
    """The flags of the real-photo input/output layer (`ilat_ext.apps.photo_io`): --max_pixels,
    --model_size (and its opposite, the default, under the old name --keep_size), --feather; with
    `masks` also --region, --margin, --mask_threshold, --strokes_polarity."""
    parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse input images with more pixels, read from the file's header "
                             f"(default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--model_size", action="store_true",
                        help="write the decoded model-size image instead of the result at the source resolution")
    parser.add_argument("--keep_size", action="store_true",
                        help="the result at the source resolution (the default; kept for old commands)")
    parser.add_argument("--feather", type=float, default=None,
                        help="blend the edit over this many source pixels inside the mask's edge "
                             "(default: one model pixel; 0: a hard paste)")
    if not masks:
        return
    parser.add_argument("--region", choices=("auto", "full", "mask"), default="auto",
                        help="what the model sees: full (the photo's centred square, aligned faces), mask (a square "
                             "around the mask with --margin of context) or auto (by the run's training data and the "
                             "mask's size; default)")
    parser.add_argument("--margin", type=float, default=0.5,
                        help="--region mask: context on each side, a fraction of the mask's box (default 0.5)")
    parser.add_argument("--mask_threshold", type=float, default=0.5,
                        help="a mask pixel is edited at this fraction of white / opacity and above (default 0.5)")
    parser.add_argument("--strokes_polarity", choices=("auto", "dark", "light"), default="auto",
                        help="dark lines on light (ours), light on dark (the release's files), or detected (default)")


def check_photo_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Usage errors (exit 2 through argparse) for the values of `add_photo_arguments`' flags."""
    if args.max_pixels < 1:
        parser.error(f"--max_pixels must be positive, got {args.max_pixels}")
    if args.model_size and args.keep_size:
        parser.error("--model_size and --keep_size contradict each other (--keep_size is the default)")
    if args.feather is not None and not args.feather >= 0:
        parser.error(f"--feather must be >= 0 pixels, got {args.feather}")
    if hasattr(args, "mask_threshold"):
        if not 0 < args.mask_threshold <= 1:
            parser.error(f"--mask_threshold must be in (0, 1], got {args.mask_threshold}")
        if not args.margin >= 0:
            parser.error(f"--margin must be >= 0, got {args.margin}")


def check_sampling_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Usage errors (exit 2 through argparse) for the values of `add_sampling_arguments`' flags."""
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top_k must be positive, got {args.top_k}")
    if args.temperature is not None and not args.temperature > 0:
        parser.error(f"--temperature must be positive, got {args.temperature}")


def sampling_options(args) -> Dict[str, Any]:
    """{greedy, top_k, temperature, seed} for the models' samplers from the parsed flags: --greedy /
    --no_greedy when given, else greedy unless --top_k, --temperature or --seed asks for a draw."""
    greedy = args.greedy
    if greedy is None:
        greedy = args.top_k is None and args.temperature is None and args.seed is None
    return {"greedy": greedy, "top_k": args.top_k,
            "temperature": 1.0 if args.temperature is None else args.temperature, "seed": args.seed}


def resolve_device(device: Optional[str]) -> str:
    """`device`, or "cuda" when available else "cpu" for None. ValueError for CUDA on a machine without it."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}, but CUDA is not available")
    return device


def report_missing(args, files: Iterable[Tuple[str, str]] = (), runs: Iterable[str] = ()) -> Optional[int]:
    """Print "error: --FLAG WHAT not found: PATH" for the first given path that does not exist and
    return 2 (the scripts' exit code for bad input); None when all are there. The commands call it
    before importing the library, so that a missing file answers before a model loads.
    files: (flag, what) pairs naming regular files; runs: flags naming run folders or checkpoints."""
    checks = [(flag, what, os.path.isfile) for flag, what in files] + [(flag, "run", os.path.exists) for flag in runs]
    for flag, what, exists in checks:
        path = getattr(args, flag)
        if path is not None and not exists(path):
            print(f"error: --{flag} {what} not found: {path!r}", file=sys.stderr)
            return 2
    return None
