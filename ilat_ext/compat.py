"""Make upstream taming-transformers importable on Lightning 2.

`taming.models.vqgan` and `taming.models.cond_transformer` (PyPI 0.0.1) do
`from taming.main import instantiate_from_config`, and `taming/main.py` imports
`pytorch_lightning.utilities.distributed`, which Lightning removed in 1.8. Rather than faking a
Lightning module, we register our own Lightning-2 port of main.py (`ilat_ext.main`) under the name
`taming.main`: it has the same public names (instantiate_from_config, get_obj_from_str,
DataModuleFromConfig, SetupCallback, ImageLogger, WrappedDataset, get_parser, main).
Nothing in site-packages is edited.
"""
import sys


def install_taming_main_alias() -> None:
    """Point `taming.main` at `ilat_ext.main`. Idempotent."""
    import taming

    import ilat_ext.main as port

    current = sys.modules.get("taming.main")
    if current is port:
        return
    sys.modules["taming.main"] = port
    taming.main = port
