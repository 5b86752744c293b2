"""ilat_ext: the Image Local Autoregressive Transformer (iLAT, NeurIPS 2021) for taming-transformers.

Importing this package makes upstream `taming.models.vqgan` and `taming.models.cond_transformer`
importable on Lightning 2 (see `ilat_ext.compat`). It imports nothing heavy itself: the names
below load their module (torch, Lightning) on first use, so the command-line front ends can
check their arguments at once.
"""
import importlib

from ilat_ext.compat import install_taming_main_finder

__version__ = "0.1.0"

install_taming_main_finder()

_EXPORTS = {
    "instantiate_from_config": "ilat_ext.util", "get_obj_from_str": "ilat_ext.util",
    "LoadReport": "ilat_ext.checkpoint", "SafeCheckpointIO": "ilat_ext.checkpoint",
    "UnsafeCheckpointError": "ilat_ext.checkpoint", "load_checkpoint": "ilat_ext.checkpoint",
    "load_state_dict_report": "ilat_ext.checkpoint",
    "DataModuleFromConfig": "ilat_ext.data", "ToyFaces": "ilat_ext.data",
    "ILATTransformer": "ilat_ext.models", "TamingTransformer": "ilat_ext.models", "TSVQModel": "ilat_ext.models",
    "VQModel": "ilat_ext.models", "TSEncoder": "ilat_ext.modules.encoder",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ilat_ext' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
