"""Split: its tests now live in test_backbone_la_mask.py, test_ilat_model.py,
test_conditioning_options.py, test_pose_geometry.py and test_pose_options.py; the tiny model and
batch builders in tests/helpers.py.

This shim only keeps `from tests.test_ilat import IMG, _build` (tests/test_demo.py) working; delete
it once that import reads `from tests.helpers import TINY_IMG, tiny_ilat`.
"""
from tests.helpers import TINY_IMG as IMG  # noqa: F401
from tests.helpers import tiny_ilat as _build  # noqa: F401
