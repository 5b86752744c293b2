"""The README stays true: its Python examples run, and its commands name real files and flags."""
import os
import re

from ilat_ext.main import get_parser
from tests.helpers import REPO

README = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()


def test_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_commands_name_existing_configs_and_known_flags():
    commands = re.findall(r"^python main\.py (.*)$", README, re.M)
    assert commands
    parser = get_parser()
    for command in commands:
        args = [a for a in command.split("#")[0].split() if "<" not in a]
        for arg in args:
            if arg.endswith(".yaml"):
                assert os.path.isfile(os.path.join(REPO, arg)), arg
        opt, unknown = parser.parse_known_args(args)
        assert not [u for u in unknown if u.startswith("-")], (command, unknown)
    assert "python -m pytest -q" in README
    ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
    assert "python -m pytest -q" in ci and 'pip install --quiet -e ".[test]"' in ci


def test_scripts_named_in_the_readme_exist():
    scripts = set(re.findall(r"python (scripts/[\w/]+\.py)", README))
    assert "scripts/demo_faces.py" in scripts and "scripts/edit_face.py" in scripts
    missing = [s for s in sorted(scripts) if not os.path.isfile(os.path.join(REPO, s))]
    assert not missing, missing
