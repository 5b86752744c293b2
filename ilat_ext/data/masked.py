"""Moved to `ilat_ext.data.mask_sources`; this shim goes once no import names the old module
(old `target:` strings resolve through `ilat_ext.util.RENAMED_TARGETS` without it)."""
from ilat_ext.data.mask_sources import *  # noqa: F401,F403
