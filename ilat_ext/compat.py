"""Make upstream taming-transformers importable on Lightning 2.

`taming.models.vqgan` and `taming.models.cond_transformer` (PyPI 0.0.1) do
`from taming.main import instantiate_from_config`, and `taming/main.py` imports
`pytorch_lightning.utilities.distributed`, which Lightning removed in 1.8. Rather than faking a
Lightning module, we register our own Lightning-2 port of main.py (`ilat_ext.main`) under the name
`taming.main`: it has the same public names (instantiate_from_config, get_obj_from_str,
DataModuleFromConfig, SetupCallback, ImageLogger, WrappedDataset, get_parser, main).
Nothing in site-packages is edited.

`install_taming_main_finder` (run by `import ilat_ext`) does it lazily: an import hook answers
`import taming.main` with `ilat_ext.main`, so Lightning is imported only when taming's modules are.
"""
import importlib
import importlib.abc
import importlib.util
import sys


class _TamingMainAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers `import taming.main` with our port `ilat_ext.main`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "taming.main":
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module("ilat_ext.main")

    def exec_module(self, module) -> None:
        pass  # already executed as ilat_ext.main


def install_taming_main_finder() -> None:
    """Register the import hook for `taming.main` (first on sys.meta_path). Idempotent."""
    if not any(isinstance(f, _TamingMainAlias) for f in sys.meta_path):
        sys.meta_path.insert(0, _TamingMainAlias())

