"""The command-line layer: console scripts, thin scripts/ wrappers, one flag spelling with its alias,
the shared sampling flags, and no printing in the library's apps."""
import ast
import importlib
import os
import re
import subprocess
import sys

import pytest

from ilat_ext.cli import (ArgumentParser, add_sampling_arguments, check_sampling_arguments, flag_spellings,
                          sampling_options)
from tests.helpers import REPO

COMMANDS = ["benchmark_edit", "benchmark_encoder", "benchmark_sampling", "build_sdf", "compare", "convert_release",
            "demo_faces", "demo_poses", "edit_face", "editor", "eval_tsvqgan", "generate_masks", "generate_xdog_sketch",
            "pose_guide", "quantize_dataset",
            "write_split_flists"]

# A valid command line of each parser, written with the canonical (underscore) spellings; every
# multi-word flag the command has is used at least once where it takes a value or is a switch.
ARGV = {
    "benchmark_edit": ["--device", "cpu", "--paths", "ilat", "--rates", "0.1", "--batches", "1", "--dtypes", "float32",
                       "--repeats", "1", "--max_release_tokens", "5", "--tiny"],
    "convert_release": ["--sketch", "s", "--tsvqgan", "t", "--transformer", "r", "--out", "o", "--tsvqgan_prefix", "_last",
                        "--overwrite"],
    "benchmark_encoder": ["--config", "toy", "--no_memory", "--rates", "0.1", "--threads", "1"],
    "benchmark_sampling": ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--repeats_full", "1", "--quick"],
    "build_sdf": ["--deepfashion", "d", "--segmentation", "s", "--keypoints", "k.json", "--places", "p",
                  "--output", "o", "--n_train", "3", "--n_test", "2"],
    "compare": ["--run", "iLAT=logs/x", "--batch_size", "2", "--top_k", "5", "--no_greedy", "--image_key", "a",
                "--mask_key", "b", "--cond_key", "c", "--target_key", "d", "--grid_rows", "3", "--save_images",
                "--fid_dims", "64", "--no_fid", "--unsafe_load"],
    "demo_faces": ["--steps_scale", "0.5", "--n_show", "2", "--n_compare", "3", "--n_score", "4"],
    "demo_poses": ["--steps_scale", "0.5", "--n_show", "2", "--n_compare", "3"],
    "edit_face": ["--run", "r", "--input_dir", "i", "--out_dir", "o", "--batch_size", "2", "--top_k", "3",
                  "--keep_size", "--no_greedy"],
    "editor": ["--run", "r", "--baseline", "b", "--pose_run", "p", "--pose_baseline", "q", "--max_pixels", "100",
               "--max_file_size", "5", "--unsafe_load"],
    "eval_tsvqgan": ["logs/run", "--num", "4", "--unsafe_load"],
    "generate_masks": ["--output_path", "m", "--count", "2"],
    "generate_xdog_sketch": ["--input_path", "i", "--output_path", "o"],
    "pose_guide": ["--run", "r", "--image", "i.png", "--ref_label", "v.mat", "--ref_frame", "1", "--target_label",
                   "v.mat", "--frames", "1:3", "--out_dir", "d", "--batch_size", "2", "--per_row", "4",
                   "--paste_back", "--top_k", "2", "--no_greedy"],
    "quantize_dataset": ["--config", "c.yaml", "--out", "t.npz", "--masks_per_image", "2", "--batch_size", "3",
                         "--no_progress"],
    "write_split_flists": ["--root", "r", "--out_dir", "o", "--n_val", "3"],
}


def _hyphenated(argv):
    return [a.replace("_", "-") if a.startswith("--") else a for a in argv]


def _parser(name):
    return importlib.import_module(f"ilat_ext.cli.{name}").get_parser()


def test_every_command_is_a_console_script_and_a_thin_script():
    setup = open(os.path.join(REPO, "setup.py")).read()
    entries = dict(re.findall(r'"(ilat-[\w-]+)=([\w.:]+)"', setup))
    assert entries.pop("ilat-main") == "ilat_ext.main:main"
    assert entries == {f"ilat-{name.replace('_', '-')}": f"ilat_ext.cli.{name}:main" for name in COMMANDS}
    scripts = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "scripts")) if f.endswith(".py"))
    assert scripts == sorted(COMMANDS)
    for name in COMMANDS:
        source = open(os.path.join(REPO, "scripts", f"{name}.py")).read()
        assert f"from ilat_ext.cli.{name} import main\n" in source and "sys.exit(main())" in source, name
        assert "sys.path" not in source and len(source.splitlines()) <= 8, name
        assert callable(importlib.import_module(f"ilat_ext.cli.{name}").main)


@pytest.mark.parametrize("name", COMMANDS)
def test_both_spellings_parse_to_the_same_namespace(name):
    parser = _parser(name)
    argv = ARGV[name]
    alias = _hyphenated(argv)
    assert alias != argv                                         # the alias spelling is really exercised
    canonical = parser.parse_known_args(argv)
    assert canonical == parser.parse_known_args(alias) and canonical[1] == []
    # every multi-word flag of the parser has both spellings, the canonical one first and in usage
    for action in parser._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        for option in long:
            assert set(flag_spellings(option)) <= set(long), (name, option)
        if long:
            assert "-" not in long[0][2:], (name, long)
    assert re.search(r"--\w+-\w+", parser.format_usage()) is None, name


def test_alias_parser_and_boolean_flag():
    p = ArgumentParser(prog="x")
    p.add_argument("--steps-scale", type=float, default=1.0)         # declared hyphenated: canonical is _
    p.add_argument("--n_show", type=int)
    add_sampling_arguments(p)
    hyphens, underscores = ["--steps-scale", "2", "--n-show", "3"], ["--steps_scale", "2", "--n_show", "3"]
    assert p.parse_args(hyphens) == p.parse_args(underscores)
    assert p.parse_args([]).greedy is None
    assert p.parse_args(["--greedy"]).greedy is True
    assert p.parse_args(["--no_greedy"]).greedy is False and p.parse_args(["--no-greedy"]).greedy is False
    assert "[--greedy | --no_greedy]" in p.format_usage()


@pytest.mark.parametrize("argv, expected", [
    ([], {"greedy": True, "top_k": None, "temperature": 1.0, "seed": None}),
    (["--top_k", "4"], {"greedy": False, "top_k": 4, "temperature": 1.0, "seed": None}),
    (["--seed", "3"], {"greedy": False, "top_k": None, "temperature": 1.0, "seed": 3}),
    (["--temperature", "0.5"], {"greedy": False, "top_k": None, "temperature": 0.5, "seed": None}),
    (["--no_greedy"], {"greedy": False, "top_k": None, "temperature": 1.0, "seed": None}),
    (["--greedy", "--top_k", "4"], {"greedy": True, "top_k": 4, "temperature": 1.0, "seed": None}),
])
def test_sampling_options_greedy_unless_a_draw_is_asked_for(argv, expected):
    p = ArgumentParser(prog="x")
    add_sampling_arguments(p)
    assert sampling_options(p.parse_args(argv)) == expected


def test_compare_keeps_greedy_by_default_whatever_the_seed():
    """compare's --seed seeds the toy data too: it does not imply a draw; --no_greedy does."""
    from ilat_ext.apps.compare import TASK_KEYS
    from ilat_ext.cli.compare import TASKS

    assert set(TASKS) == set(TASK_KEYS)                # --task's choices, spelled out for a torch-free parser
    p = _parser("compare")
    run = ["--run", "iLAT=logs/x"]
    assert sampling_options(p.parse_args(run + ["--seed", "5", "--top_k", "3"]))["greedy"] is True
    assert sampling_options(p.parse_args(run + ["--no-greedy"])) == {"greedy": False, "top_k": None,
                                                                      "temperature": 1.0, "seed": 0}


@pytest.mark.parametrize("argv, message", [(["--top_k", "0"], "--top_k must be positive, got 0"),
                                           (["--temperature", "0"], "--temperature must be positive, got 0.0")])
def test_sampling_argument_errors(argv, message, capsys):
    p = ArgumentParser(prog="x")
    add_sampling_arguments(p)
    with pytest.raises(SystemExit) as e:
        check_sampling_arguments(p, p.parse_args(argv))
    assert e.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == f"x: error: {message}"


def test_cli_package_imports_only_the_standard_library():
    """ilat_ext/cli/__init__.py is what the commands import before checking their inputs."""
    tree = ast.parse(open(os.path.join(REPO, "ilat_ext", "cli", "__init__.py")).read())
    top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert top <= {"argparse", "os", "sys", "typing"}, top


def test_library_apps_and_runs_do_not_print():
    paths = [os.path.join(REPO, "ilat_ext", "runs.py")]
    apps = os.path.join(REPO, "ilat_ext", "apps")
    paths += [os.path.join(apps, f) for f in sorted(os.listdir(apps)) if f.endswith(".py")]
    for path in paths:
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Name) and node.id == "print":
                raise AssertionError(f"{path}:{node.lineno} uses print")


def test_console_script_and_script_wrapper_report_a_missing_file(tmp_path):
    """Through the installed console name and through python scripts/X.py: exit 2, one line naming the file."""
    bindir = os.path.dirname(sys.executable)
    console = os.path.join(bindir, "ilat-edit-face")
    if not os.path.isfile(console):
        pytest.skip("the console scripts are not installed (pip install -e .)")
    missing = str(tmp_path / "face.png")
    args = ["--run", str(tmp_path), "--image", missing, "--mask", missing, "--strokes", missing,
            "--out", str(tmp_path / "o.png")]
    for command in ([console], [sys.executable, os.path.join(REPO, "scripts", "edit_face.py")]):
        result = subprocess.run(command + args, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines() == [f"error: --image file not found: {missing!r}"]


def test_demo_flags_overrides_and_errors(capsys):
    from ilat_ext.cli.demos import demo_parser, parse_demo_args

    faces = demo_parser("faces", "the face demo")
    args, overrides = parse_demo_args(faces, ["--steps-scale", "2", "lightning.trainer.limit_val_batches=1"])
    assert args.steps_scale == 2.0 and args.n_score == 32 and overrides == ["lightning.trainer.limit_val_batches=1"]
    assert not hasattr(parse_demo_args(demo_parser("poses", "the pose demo"), [])[0], "n_score")
    for argv, message in ((["--steps_scale", "0"], "--steps_scale must be > 0"),
                          (["--n_show", "0"], "--n_show must be >= 1"),
                          (["--bogus"], "unrecognized options: ['--bogus']")):
        with pytest.raises(SystemExit) as e:
            parse_demo_args(faces, argv)
        assert e.value.code == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1], argv
