"""ilat_ext: the Image Local Autoregressive Transformer (iLAT, NeurIPS 2021) for taming-transformers.

Importing this package makes upstream `taming.models.vqgan` and `taming.models.cond_transformer`
importable on Lightning 2 (see `ilat_ext.compat`).
"""
__version__ = "0.1.0"

from ilat_ext.util import get_obj_from_str, instantiate_from_config
from ilat_ext.checkpoint import LoadReport, SafeCheckpointIO, UnsafeCheckpointError, load_checkpoint, load_state_dict_report
from ilat_ext.compat import install_taming_main_alias

install_taming_main_alias()

from ilat_ext.data import DataModuleFromConfig, ToyFaces  # noqa: E402
from ilat_ext.models import ILATTransformer, TamingTransformer, TSVQModel, VQModel  # noqa: E402
from ilat_ext.modules.encoder import TSEncoder  # noqa: E402

__all__ = [
    "__version__", "instantiate_from_config", "get_obj_from_str", "load_checkpoint", "load_state_dict_report",
    "LoadReport", "SafeCheckpointIO", "UnsafeCheckpointError", "install_taming_main_alias",
    "VQModel", "TSVQModel", "TSEncoder", "TamingTransformer", "ILATTransformer", "DataModuleFromConfig", "ToyFaces",
]
