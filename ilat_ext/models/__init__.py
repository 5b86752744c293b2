"""LightningModules users name in `target:`."""
from ilat_ext.models.cond_transformer import EditResult, TamingTransformer
from ilat_ext.models.schedule import transformer_param_groups
from ilat_ext.models.stages import SOSProvider
from ilat_ext.models.ilat_transformer import ILATTransformer
from ilat_ext.models.pose_transformer import PoseILATTransformer
from ilat_ext.models.sketch_vqgan import SketchVQModel
from ilat_ext.models.tsvqgan import TSVQModel
from ilat_ext.models.vqgan import VQModel

__all__ = ["VQModel", "TSVQModel", "SketchVQModel", "TamingTransformer", "ILATTransformer", "PoseILATTransformer", "EditResult", "SOSProvider",
           "transformer_param_groups"]
