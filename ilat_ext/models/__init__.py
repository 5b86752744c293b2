"""LightningModules users name in `target:`."""
from ilat_ext.models.cond_transformer import SOSProvider, TamingTransformer, transformer_param_groups
from ilat_ext.models.tsvqgan import TSVQModel
from ilat_ext.models.vqgan import VQModel

__all__ = ["VQModel", "TSVQModel", "TamingTransformer", "SOSProvider", "transformer_param_groups"]
