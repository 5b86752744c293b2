"""Config plumbing shared by the library and the command line.

`instantiate_from_config` is taming's `target:`/`params:` convention, with three differences:
the library never imports the top-level `main` module, targets that upstream configs spell
`main.X` or `taming.main.X` resolve to our Lightning-2 port in `ilat_ext.main`, and the dotted
paths of two alias tables resolve to their new homes: `UPSTREAM_TARGET_ALIASES` (taming classes
replaced by drop-ins) and `RENAMED_TARGETS` (our own classes that moved, named by saved runs).
"""
import contextlib
import importlib
import logging
import sys
from typing import Any, Mapping

logger = logging.getLogger(__name__)

# Upstream taming configs name classes from its main.py (`main.DataModuleFromConfig`, ...). Those
# names live in `ilat_ext.main` here, so the same YAML files work unchanged.
_UPSTREAM_MAIN_MODULES = ("main", "taming.main")

# Upstream classes that do not work on Lightning 2 or offline, mapped to our drop-in versions with
# the same constructor and parameter names. Upstream configs therefore run unchanged.
UPSTREAM_TARGET_ALIASES = {
    "taming.models.vqgan.VQModel": "ilat_ext.models.vqgan.VQModel",
    "taming.models.cond_transformer.Net2NetTransformer": "ilat_ext.models.cond_transformer.TamingTransformer",
    "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator": "ilat_ext.modules.losses.VQLPIPSWithDiscriminator",
    "taming.modules.losses.VQLPIPSWithDiscriminator": "ilat_ext.modules.losses.VQLPIPSWithDiscriminator",
    # same constructor and parameter names, plus the boolean attention mask and KV cache local sampling needs
    "taming.modules.transformer.mingpt.GPT": "ilat_ext.modules.gpt.GPT",
    # upstream's own-data recipe (configs/custom_vqgan.yaml); the PyPI package has no taming/data/custom.py
    "taming.data.custom.CustomBase": "ilat_ext.data.custom.CustomBase",
    "taming.data.custom.CustomTrain": "ilat_ext.data.custom.CustomTrain",
    "taming.data.custom.CustomTest": "ilat_ext.data.custom.CustomTest",
    # named by upstream configs, absent from the PyPI package
    "taming.models.dummy_cond_stage.DummyCondStage": "ilat_ext.models.stages.DummyCondStage",
    "taming.modules.losses.segmentation.BCELossWithQuant": "ilat_ext.modules.losses.BCELossWithQuant",
    "cutlit.DataModuleFromConfig": "ilat_ext.data.datamodule.DataModuleFromConfig",  # upstream's typo for main.
}

# Our own targets that moved to another module, old dotted path -> new one. A run saves the config
# it was started with (its `configs/*-project.yaml`, a checkpoint's hyper-parameters) with the paths
# of its day; these keep resolving after the module they name is gone. Shipped configs use the new.
RENAMED_TARGETS = {
    # data/masked.py became data/mask_sources.py: the name was too close to masks.py and data/masks.py
    "ilat_ext.data.masked.MaskedDataset": "ilat_ext.data.mask_sources.MaskedDataset",
    "ilat_ext.data.masked.MaskSource": "ilat_ext.data.mask_sources.MaskSource",
    "ilat_ext.data.masked.MaskSet": "ilat_ext.data.mask_sources.MaskSet",
}
_announced_aliases = set()


def get_obj_from_str(string: str, reload: bool = False) -> Any:
    """Import `package.module.Name` and return `Name` (upstream and renamed paths are redirected,
    see the two tables above; each redirection is logged once per process at INFO level)."""
    if not isinstance(string, str) or "." not in string:
        raise ValueError(f"target must be a dotted path like 'package.module.Class', got {string!r}")
    for table, why in ((UPSTREAM_TARGET_ALIASES, "Lightning-2/offline drop-in"), (RENAMED_TARGETS, "moved")):
        if string in table:
            if string not in _announced_aliases:
                _announced_aliases.add(string)
                logger.info("target %s resolves to %s (%s)", string, table[string], why)
            string = table[string]
    module_name, attr = string.rsplit(".", 1)
    if module_name in _UPSTREAM_MAIN_MODULES:
        module_name = "ilat_ext.main"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ImportError(f"cannot import module {module_name!r} for target {string!r}: {err}") from err
    if reload:
        module = importlib.reload(module)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r} (target {string!r})") from None


def check_mapping_keys(what: str, value: Any, allowed) -> Mapping:
    """`value` if it is a mapping with keys among `allowed`, else ValueError naming `what` (e.g.
    "mask_sets[0]") and the allowed keys: a misspelt YAML key fails here instead of being ignored."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping with keys among {allowed}, got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: unknown keys {unknown}; allowed keys are {allowed}")
    return value


def instantiate_from_config(config: Mapping) -> Any:
    """Build `config["target"](**config["params"])`.

    The special strings `__is_first_stage__` and `__is_unconditional__` are handled by the
    transformers that accept them, not here.
    """
    if config is None or "target" not in config:
        raise KeyError(f"expected a mapping with a 'target' key to instantiate, got {config!r}")
    params = config.get("params", None) or {}
    return get_obj_from_str(config["target"])(**params)


class _StdoutHandler(logging.StreamHandler):
    """A handler that writes to whatever `sys.stdout` is at the time (so captured output, e.g.
    pytest's, sees it)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


@contextlib.contextmanager
def log_to_stdout(level: int = logging.INFO):
    """For the command line: while inside, the library's log records (logger "ilat_ext") are
    printed as plain lines on stdout. Library code only logs; the entry points wrap their work in
    this. The logger's handlers and level are restored on exit."""
    root = logging.getLogger("ilat_ext")
    handler, previous = _StdoutHandler(), root.level
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
