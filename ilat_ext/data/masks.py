"""Moved to `ilat_ext.data.mask_shapes`; this shim goes once no import names the old module."""
from ilat_ext.data.mask_shapes import *  # noqa: F401,F403
