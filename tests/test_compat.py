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
