"""Plain nn.Module building blocks (no Lightning here)."""
from ilat_ext.modules.encoder import Decoder, TSEncoder

__all__ = ["TSEncoder", "Decoder"]
