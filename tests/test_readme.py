"""The README and docs/ stay true: their Python examples run, their commands name real files and flags,
and the README stays a front door that links every docs page."""
import glob
import os
import re

import pytest

from ilat_ext.main import get_parser
from tests.helpers import REPO

README = os.path.join(REPO, "README.md")
DOCS = sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
PAGES = [README] + DOCS


def _read(path):
    return open(path, encoding="utf-8").read()


def _name(path):
    return os.path.relpath(path, REPO)


@pytest.mark.parametrize("path", PAGES, ids=_name)
def test_python_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", _read(path), re.S)
    if path == README:
        assert len(blocks) == 3  # TS-VQGAN no-leak, iLAT sample_local, pose synthesize
    for block in blocks:
        exec(compile(block, _name(path), "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("path", PAGES, ids=_name)
def test_commands_name_existing_configs_and_known_flags(path):
    text = _read(path)
    commands = re.findall(r"^python main\.py (.*)$", text, re.M)
    if path == README:
        assert commands
    parser = get_parser()
    for command in commands:
        args = [a for a in command.split("#")[0].split() if "<" not in a and a != "\\"]
        for arg in args:
            if arg.endswith(".yaml"):
                assert os.path.isfile(os.path.join(REPO, arg)), (_name(path), arg)
        opt, unknown = parser.parse_known_args(args)
        assert not [u for u in unknown if u.startswith("-")], (_name(path), command, unknown)
    # configs named anywhere on the page exist
    for config in set(re.findall(r"(configs/[\w/]+\.yaml)", text)):
        assert os.path.isfile(os.path.join(REPO, config)), (_name(path), config)


def test_readme_test_command_is_the_ci_one():
    assert "python -m pytest -q" in _read(README)
    ci = _read(os.path.join(REPO, ".ci", "run"))
    assert "python -m pytest -q" in ci and 'pip install --quiet -e ".[test]"' in ci


@pytest.mark.parametrize("path", PAGES, ids=_name)
def test_scripts_named_exist(path):
    scripts = set(re.findall(r"(scripts/[\w/]+\.py)", _read(path))) - {"scripts/X.py"}  # X: a placeholder
    if path == README:
        assert "scripts/demo_faces.py" in scripts and "scripts/edit_face.py" in scripts
    missing = [s for s in sorted(scripts) if not os.path.isfile(os.path.join(REPO, s))]
    assert not missing, (_name(path), missing)


def test_readme_is_a_front_door_that_links_every_docs_page():
    text = _read(README)
    assert len(text.splitlines()) <= 250
    assert DOCS, "docs/ has no pages"
    unlinked = [_name(d) for d in DOCS if f"]({_name(d)})" not in text]
    assert not unlinked, unlinked


@pytest.mark.parametrize("path", PAGES, ids=_name)
def test_relative_links_resolve(path):
    """Every relative link (file and #anchor) points at a file that exists and a heading it has."""
    text = _read(path)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        assert os.path.isfile(dest), (_name(path), target)
        if anchor and dest.endswith(".md"):
            anchors = {_anchor(h) for h in re.findall(r"^#+ (.*)$", _read(dest), re.M)}
            assert anchor in anchors, (_name(path), target)


def _anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return heading.replace(" ", "-")
