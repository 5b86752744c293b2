"""Plain nn.Module building blocks (no Lightning here)."""
from ilat_ext.modules.encoder import Decoder, TSEncoder
from ilat_ext.modules.pointmlp import PointMLP

__all__ = ["TSEncoder", "Decoder", "PointMLP"]
