"""The browser editor (gradio): draw a mask and strokes on your own photo, see Taming, Taming* and iLAT
side by side; a person redrawn in a new pose: `ilat-editor`.

    ilat-editor --run logs/<ilat run> [--baseline logs/<taming run>] [--host 127.0.0.1] [--port 7860]
    ilat-editor --demo demo                  # the main job's runs: demo/logs/*_ilat, *_taming
    ilat-editor --pose_run logs/<pose run> [--pose_baseline logs/<taming pose run>]
    ilat-editor --demo demo_poses            # the pose demo's runs: *_pose_ilat, *_pose_taming

(`python scripts/editor.py ...` runs the same.) The runs load once; the server binds 127.0.0.1
unless --host says otherwise, prints its URL, never makes a share link, refuses uploads over
--max_file_size and photos over --max_pixels with a message in the page, and edits one request at
a time. See `ilat_ext.apps.editor`. Exit code 2 for a run that cannot be loaded.
"""
import argparse
import os
import sys

from ilat_ext.cli import ArgumentParser, report_missing, resolve_device

DEFAULT_MAX_PIXELS = 50_000_000   # ilat_ext.apps.photo_io.DEFAULT_MAX_PIXELS


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="ilat-editor", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="logs/<run> of an iLAT face run (a pose run goes to the pose tab)")
    p.add_argument("--baseline", help="logs/<run> of a Taming face run: Taming and Taming* beside iLAT")
    p.add_argument("--pose_run", help="logs/<run> of an iLAT pose run")
    p.add_argument("--pose_baseline", help="logs/<run> of a Taming pose run (lm_rate 1)")
    p.add_argument("--demo", help="a demo's --out folder: its newest ilat / taming (or pose_ilat / pose_taming) runs")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse photos with more pixels (default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--max_file_size", type=float, default=25.0, help="refuse uploads over this many MB (default 25)")
    p.add_argument("--examples", type=int, default=4, help="held-out faces offered as examples (toy runs; default 4)")
    p.add_argument("--unsafe_load", action="store_true", help="allow full unpickling of the runs' checkpoints "
                                                             "(runs pickled code: trusted files only)")
    return p


def _demo_runs(args, parser) -> None:
    from ilat_ext.apps.chain import find_run

    logs = os.path.join(args.demo, "logs")
    if not os.path.isdir(logs):
        parser.error(f"--demo {args.demo!r} has no logs/ folder: run python scripts/demo_faces.py --out {args.demo}")
    found = {name: find_run(logs, name) for name in ("ilat", "taming", "pose_ilat", "pose_taming")}
    args.run = args.run or found["ilat"]
    args.baseline = args.baseline or (found["taming"] if args.run == found["ilat"] else None)
    args.pose_run = args.pose_run or found["pose_ilat"]
    args.pose_baseline = args.pose_baseline or (found["pose_taming"] if args.pose_run == found["pose_ilat"] else None)
    if args.run is None and args.pose_run is None:
        parser.error(f"--demo {args.demo!r}: no finished ilat or pose_ilat run under {logs}")


def is_pose_run(run: str) -> bool:
    """Whether the run's config builds a PoseILATTransformer (read from its saved config, nothing loaded)."""
    from ilat_ext.models.pose_transformer import PoseILATTransformer
    from ilat_ext.runs import resolve_run, run_config
    from ilat_ext.util import get_obj_from_str

    target = run_config(resolve_run(run)[0]).model.get("target", "")
    try:
        cls = get_obj_from_str(target)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, PoseILATTransformer)


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.demo is not None:
        _demo_runs(args, parser)
    if args.run is None and args.pose_run is None:
        parser.error("give --run (or --pose_run, or --demo DIR)")
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    if args.max_pixels < 1 or not args.max_file_size > 0:
        parser.error("--max_pixels and --max_file_size must be positive")
    missing = report_missing(args, (), ("run", "baseline", "pose_run", "pose_baseline"))
    if missing is not None:
        return missing
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from ilat_ext.apps import edit, editor
    from ilat_ext.apps import pose_guide as pg

    try:
        device = resolve_device(args.device)
        unsafe = args.unsafe_load or None
        if args.run is not None and args.pose_run is None and is_pose_run(args.run):
            args.pose_run, args.run = args.run, None
            args.pose_baseline, args.baseline = args.pose_baseline or args.baseline, None
        face = pose = None
        if args.run is not None:
            ilat = edit.load_editor(args.run, device, unsafe=unsafe)
            baseline = None
            if args.baseline is not None:
                baseline = edit.load_editor(args.baseline, device, size=ilat.size, baseline=True, unsafe=unsafe).model
            options = edit.ReadOptions(region="auto", max_pixels=args.max_pixels, whole_images=ilat.whole_images)
            examples = editor.toy_examples(ilat.size, args.examples) if ilat.sketch_style == "toy" and args.examples \
                else []
            face = editor.FaceSession(ilat, baseline, options, examples)
            print(f"face editing: {args.run} ({type(ilat.model).__name__}, {ilat.size} px)"
                  + (f", baseline {args.baseline}" if baseline is not None else ""))
        if args.pose_run is not None:
            run = pg.load_pose_model(args.pose_run, device, unsafe=unsafe)
            baseline = None if args.pose_baseline is None else \
                pg.load_pose_model(args.pose_baseline, device, baseline=True, unsafe=unsafe).model
            pose = editor.PoseSession(run, baseline, args.max_pixels)
            print(f"pose guiding: {args.pose_run} ({run.size} px)"
                  + (f", baseline {args.pose_baseline}" if baseline is not None else ""))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = editor.build_app(face, pose, args.max_pixels)
    try:
        editor.launch(app, args.host, args.port, f"{args.max_file_size:g}mb", block=False)
    except OSError as e:
        print(f"error: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    print(f"Serving the iLAT editor at http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    return 0
