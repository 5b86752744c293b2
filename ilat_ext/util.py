"""Config plumbing shared by the library and the command line.

`instantiate_from_config` is taming's `target:`/`params:` convention, with two differences:
the library never imports the top-level `main` module, and targets that upstream configs spell
`main.X` or `taming.main.X` resolve to our Lightning-2 port in `ilat_ext.main`.
"""
import importlib
from typing import Any, Mapping

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
}
_announced_aliases = set()


def get_obj_from_str(string: str, reload: bool = False) -> Any:
    """Import `package.module.Name` and return `Name` (upstream names are redirected, see above)."""
    if not isinstance(string, str) or "." not in string:
        raise ValueError(f"target must be a dotted path like 'package.module.Class', got {string!r}")
    if string in UPSTREAM_TARGET_ALIASES:
        if string not in _announced_aliases:
            _announced_aliases.add(string)
            print(f"Note: target {string} resolves to {UPSTREAM_TARGET_ALIASES[string]} (Lightning-2/offline drop-in)")
        string = UPSTREAM_TARGET_ALIASES[string]
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


def instantiate_from_config(config: Mapping) -> Any:
    """Build `config["target"](**config["params"])`.

    The special strings `__is_first_stage__` and `__is_unconditional__` are handled by the
    transformers that accept them, not here.
    """
    if config is None or "target" not in config:
        raise KeyError(f"expected a mapping with a 'target' key to instantiate, got {config!r}")
    params = config.get("params", None) or {}
    return get_obj_from_str(config["target"])(**params)
