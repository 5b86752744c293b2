"""Upstream taming imports on Lightning 2 once ilat_ext is imported; the library never imports `main`."""
import os
import re
import subprocess
import sys

from tests.helpers import REPO


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO))


def test_upstream_models_import_after_ilat_ext():
    before = _python("import taming.models.vqgan")
    assert before.returncode != 0 and "pytorch_lightning.utilities.distributed" in before.stderr
    after = _python("import ilat_ext, taming.models.vqgan, taming.models.cond_transformer, taming.main;"
                    "import ilat_ext.main as m; assert taming.main is m; print('ok')")
    assert after.returncode == 0, after.stderr[-3000:]
    assert after.stdout.strip().endswith("ok")


def test_library_never_imports_top_level_main():
    pattern = re.compile(r"^\s*(from\s+main\s+import|import\s+main\b)", re.M)
    offenders = []
    for root, _, files in os.walk(os.path.join(REPO, "ilat_ext")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                if pattern.search(open(path, encoding="utf-8").read()):
                    offenders.append(path)
    assert offenders == []


def test_public_api_is_reexported():
    import ilat_ext
    for name in ("VQModel", "TamingTransformer", "instantiate_from_config", "load_checkpoint", "ToyFaces",
                 "DataModuleFromConfig", "SafeCheckpointIO"):
        assert hasattr(ilat_ext, name), name


def test_renamed_targets_resolve_without_the_old_module(monkeypatch):
    """A run saved before a module was renamed names the old dotted path in its config; it resolves
    through `RENAMED_TARGETS` alone (the old module is made unimportable here) to the same class."""
    import numpy as np

    from ilat_ext.data.mask_sources import MaskedDataset
    from ilat_ext.util import RENAMED_TARGETS, get_obj_from_str, instantiate_from_config

    for old, new in RENAMED_TARGETS.items():
        monkeypatch.setitem(sys.modules, old.rsplit(".", 1)[0], None)
        assert get_obj_from_str(old) is get_obj_from_str(new), old
    assert RENAMED_TARGETS["ilat_ext.data.masked.MaskedDataset"] == "ilat_ext.data.mask_sources.MaskedDataset"
    params = {"dataset": {"target": "ilat_ext.data.ToyFaces", "params": {"size": 32, "length": 2, "mask": False}},
              "mask_source": {"target": "ilat_ext.data.masked.MaskSource", "params": {"seed": 3}}}
    old_ds = instantiate_from_config({"target": "ilat_ext.data.masked.MaskedDataset", "params": params})
    new_ds = instantiate_from_config({"target": "ilat_ext.data.mask_sources.MaskedDataset", "params": params})
    assert type(old_ds) is MaskedDataset and type(old_ds.mask_source) is type(new_ds.mask_source)
    assert np.array_equal(old_ds[1]["mask"], new_ds[1]["mask"])


def test_target_redirections_are_logged_not_printed(monkeypatch, caplog, capsys):
    import logging

    from ilat_ext import util

    monkeypatch.setattr(util, "_announced_aliases", set())
    with caplog.at_level(logging.INFO, logger="ilat_ext.util"):
        util.get_obj_from_str("taming.models.vqgan.VQModel")
        util.get_obj_from_str("taming.models.vqgan.VQModel")
        util.get_obj_from_str("ilat_ext.data.masked.MaskSource")
    messages = [r.getMessage() for r in caplog.records if r.name == "ilat_ext.util"]
    assert messages == ["target taming.models.vqgan.VQModel resolves to ilat_ext.models.vqgan.VQModel "
                        "(Lightning-2/offline drop-in)",
                        "target ilat_ext.data.masked.MaskSource resolves to ilat_ext.data.mask_sources.MaskSource "
                        "(moved)"]
    assert capsys.readouterr().out == ""


def test_data_layer_and_util_never_print():
    """Library code reports through logging / warnings; only scripts print."""
    import ast

    paths = [os.path.join(REPO, "ilat_ext", "util.py")]
    for root, _, files in os.walk(os.path.join(REPO, "ilat_ext", "data")):
        paths += [os.path.join(root, name) for name in files if name.endswith(".py")]
    offenders = []
    for path in paths:
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
    assert offenders == []


def test_import_is_light_and_taming_main_resolves_lazily():
    """`import ilat_ext` loads neither torch nor Lightning (the command lines answer bad input at
    once); upstream's taming modules then import, through our port registered as `taming.main`;
    and a script's missing input is reported before torch is imported."""
    import subprocess
    import sys

    probe = ("import sys, ilat_ext\n"
             "assert 'torch' not in sys.modules and 'pytorch_lightning' not in sys.modules\n"
             "from taming.models.cond_transformer import Net2NetTransformer\n"
             "import ilat_ext.main, taming\n"
             "assert sys.modules['taming.main'] is ilat_ext.main and taming.main is ilat_ext.main\n"
             "assert ilat_ext.VQModel.__module__ == 'ilat_ext.models.vqgan'\n")
    subprocess.run([sys.executable, "-c", probe], check=True)
    script = ("import sys\nfrom ilat_ext.cli.edit_face import main\nrc = main(['--run', 'no_run', '--image', "
              "'no.png', '--mask', 'm.png', '--strokes', 's.png', '--out', 'o.png'])\n"
              "assert rc == 2 and 'torch' not in sys.modules, (rc, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "not found: 'no.png'" in done.stderr
