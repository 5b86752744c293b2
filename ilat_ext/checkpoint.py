"""One checkpoint loader for the whole package: a model's `ckpt_path`, main.py `--resume`, scripts.

Threat model
------------
A `.ckpt` file is a pickle, and unpickling calls whatever the file names (`builtins.exec`,
`posix.system`, any importable class). Loading a downloaded checkpoint with plain `pickle` is running
its author's code. `torch.load(weights_only=True)` (torch's default since 2.6) swaps in an unpickler
that only resolves an allowlist of globals (tensor rebuild functions, dtypes, `OrderedDict`, ...)
and refuses everything else. That unpickler is the security boundary this module relies on.

Why `weights_only=True` alone is not enough
-------------------------------------------
The public taming checkpoints were written by Lightning 1.0.x, which keys `checkpoint["callbacks"]`
by the callback *class* (`pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`). The file
only names that class and never calls it, but `weights_only=True` refuses every global that is not
on its list, and torch's own advice is then `weights_only=False`, which runs the file's code. In
safe mode we do this instead:

1. `torch.serialization.get_unsafe_globals_in_checkpoint` lists, statically and without
   unpickling, the globals in the file that torch would refuse.
2. If any of them is not a class under `ALLOWED_CLASS_PREFIXES` (Lightning callbacks), we refuse
   with `UnsafeCheckpointError` and name them.
3. Otherwise we load with `weights_only=True` and allowlist each name for this one call, bound to an
   inert `UpstreamClassRef` placeholder and not to the real class. Nothing from Lightning is
   imported. If the pickle tries to call or instantiate the name (REDUCE / NEWOBJ), the placeholder
   raises, so a payload routed through an allowed name is still refused.

Step 1 only exists to give a good error message. Safety comes from step 3, which is a weights-only
load whose only extra globals are inert. A file swapped between the two reads changes nothing.
Legacy (non-zip, torch < 1.6) files cannot be scanned, so they get a plain weights-only load.
`unsafe=True` (`--unsafe-load` on main.py) is `torch.load(weights_only=False)`, for trusted files.
"""
import logging
import os
import pickle
import re
import uuid
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Union

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO  # == pytorch_lightning.plugins.io.TorchCheckpointIO
from torch import nn

# Globals a safe load may *name* but never call. Lightning 1.x keys `checkpoint["callbacks"]` by
# callback class, and its callbacks live here (1.x and 2.x package names). Loggers, `AttributeDict`
# and OmegaConf containers are deliberately absent: no public taming checkpoint names them, and an
# inert placeholder cannot stand in for an object that has to be built.
ALLOWED_CLASS_PREFIXES = ("pytorch_lightning.callbacks.", "lightning.pytorch.callbacks.")
_CLASS_PATH = re.compile(r"(?:[A-Za-z_]\w*\.)+[A-Z]\w*")  # dotted path ending in a CapWords name

_OPT_IN = ("Only if you trust this file, load it with `load_checkpoint(path, unsafe=True)` in Python or "
           "`--unsafe-load` on the command line; that runs any code the file contains.")

_default_unsafe = False


logger = logging.getLogger(__name__)


class CheckpointKeysWarning(UserWarning):
    """A state dict loaded with missing or unexpected keys (the message is the `LoadReport`)."""


warnings.simplefilter("always", CheckpointKeysWarning)  # every load's report, not only the first


class UnsafeCheckpointError(pickle.UnpicklingError):
    """Loading this checkpoint would need code execution, or it cannot be checked.

    A subclass of `pickle.UnpicklingError`, which is what torch raises for weights-only failures, so
    callers that already catch that keep working.
    """


@dataclass(frozen=True)
class UpstreamClassRef:
    """Inert stand-in for a class that a checkpoint only names, such as the `ModelCheckpoint` key of
    Lightning 1.x `callbacks`. It is hashable (it ends up as a dict key) and printable, and calling or
    instantiating it raises `UnsafeCheckpointError`.

    Lightning 2 does not match these keys to its callbacks, so old callback state (best-model paths
    on the original author's machine) is simply not restored.
    """

    name: str

    def __new__(cls, *args, **kwargs):
        # The weights-only unpickler runs NEWOBJ as `cls.__new__(cls, *args)`; with a placeholder
        # as `cls`, that call lands here with an instance instead of a class.
        if not isinstance(cls, type):
            raise UnsafeCheckpointError(f"the checkpoint tries to instantiate {cls.name}; it may only name it")
        return super().__new__(cls)

    def __call__(self, *args, **kwargs):
        raise UnsafeCheckpointError(f"the checkpoint tries to call {self.name}(...); it may only name it")


def set_default_unsafe(unsafe: bool) -> None:
    """Choose what `load_checkpoint(..., unsafe=None)` means in this process.

    main.py sets this from `--unsafe-load`, so that a model's `ckpt_path`, which is loaded deep inside
    config instantiation, follows the flag.
    """
    global _default_unsafe
    _default_unsafe = bool(unsafe)


def load_checkpoint(path: Union[str, os.PathLike], unsafe: Optional[bool] = None, map_location: Any = "cpu") -> dict:
    """Load a `torch.save` checkpoint without running pickled code (see the module docstring).

    Args:
        path: a local checkpoint file.
        unsafe: True means full unpickling (trusted files only; warns). None means the process
            default, which is False unless `set_default_unsafe(True)` was called.
        map_location: as for `torch.load`.
    Returns:
        The checkpoint dict. A bare state dict (a non-empty mapping of str -> Tensor, as
        `torch.save(model.state_dict())` writes) is returned wrapped as `{"state_dict": sd}`, so
        callers can always read `ckpt["state_dict"]`.
    Raises:
        FileNotFoundError / IsADirectoryError: `path` is not a file.
        UnsafeCheckpointError: safe mode, and the file names globals that could run code.
        RuntimeError: the file is truncated or not a `torch.save` file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"expected a checkpoint file but {path} is a directory "
                                f"(did you mean {os.path.join(path, 'last.ckpt')}?)")
    if _default_unsafe if unsafe is None else unsafe:
        warnings.warn(f"loading {path} with full unpickling (unsafe=True): this can execute arbitrary code "
                      "stored in the file; only do this for files you trust", UserWarning, stacklevel=2)
        obj = torch.load(path, map_location=map_location, weights_only=False)
    else:
        obj = _load_weights_only(path, map_location)
    if (isinstance(obj, Mapping) and obj and "state_dict" not in obj
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        return {"state_dict": obj}
    if not isinstance(obj, dict):
        raise TypeError(f"{path} holds a {type(obj).__name__}, expected a checkpoint dict or a state dict")
    return obj


def _is_allowed_class(name: str) -> bool:
    return name.startswith(ALLOWED_CLASS_PREFIXES) and _CLASS_PATH.fullmatch(name) is not None


def _load_weights_only(path: str, map_location: Any) -> Any:
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # the magic number torch itself checks
    refs = []
    if is_zip:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except pickle.UnpicklingError as err:  # an opcode the weights-only unpickler does not support
            raise UnsafeCheckpointError(f"refusing to load {path}: it uses pickle features that cannot be "
                                        f"checked ({err}). {_OPT_IN}") from None
        except (RuntimeError, OSError, ValueError, EOFError) as err:  # torch reports truncation either way
            raise RuntimeError(f"cannot read checkpoint {path} (truncated, or not written by torch.save?): "
                               f"{err}") from err
        refused = sorted(name for name in names if not _is_allowed_class(name))
        if refused:
            raise UnsafeCheckpointError(f"refusing to load {path}: it references {', '.join(refused)}, which "
                                        f"unpickling would import and may call. {_OPT_IN}")
        refs = [(UpstreamClassRef(name), name) for name in sorted(names)]
    try:
        with torch.serialization.safe_globals(refs):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch re-raises its unpickler's errors `from None`: the original is still in __context__.
        inner = err.__context__
        found = re.search(r"GLOBAL (\S+)", str(err))
        if isinstance(inner, UnsafeCheckpointError):
            detail = str(inner)
        elif found:  # torch strips "builtins." from the names it reports
            name = found.group(1) if "." in found.group(1) else "builtins." + found.group(1)
            detail = f"it references {name}, which unpickling would import and may call"
        else:
            detail = f"torch's weights-only unpickler rejected it: {err}"
        raise UnsafeCheckpointError(f"refusing to load {path}: {detail}. {_OPT_IN}") from None
    except Exception as err:  # e.g. a junk legacy file surfaces as KeyError from the unpickler's memo
        raise RuntimeError(f"cannot load checkpoint {path}: {type(err).__name__}: {err}") from err


@dataclass
class LoadReport:
    """What `load_state_dict_report` did: model keys left at their initial values (`missing`),
    checkpoint keys the model has no place for (`unexpected`), checkpoint keys dropped by an ignore
    prefix (`ignored`), and how many tensors were copied (`loaded`)."""

    missing: List[str]
    unexpected: List[str]
    ignored: List[str]
    loaded: int = 0
    source: str = ""

    def summary(self) -> str:
        """Counts, then each key list grouped by module prefix, e.g. `loss.perceptual_loss.*: 52 keys`."""
        origin = f" from {self.source}" if self.source else ""
        lines = [f"state dict{origin}: {self.loaded} loaded, {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected, {len(self.ignored)} ignored"]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("ignored", self.ignored)):
            if keys:
                lines.append(f"  {label}:")
                lines += [f"    {group}" for group in _group_keys(keys)]
        return "\n".join(lines)


def _group_keys(keys: Sequence[str]) -> List[str]:
    """`encoder.down.0.block.0.conv1.weight` goes into `encoder.down.*` (module path, two levels).
    Single-key groups are shown as the key itself."""
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for key in keys:
        groups.setdefault(".".join(key.split(".")[:-1][:2]) or key, []).append(key)
    return [members[0] if len(members) == 1 else f"{prefix}.*: {len(members)} keys"
            for prefix, members in groups.items()]


def load_state_dict_report(module: nn.Module, state_dict: Mapping[str, Any], ignore_keys: Sequence[str] = (),
                           strict: bool = False, source: str = "") -> LoadReport:
    """Load `state_dict` into `module`, report what did not match, and return it as a `LoadReport`.

    Missing or unexpected keys raise a `CheckpointKeysWarning` (shown every time, with the report);
    a clean load is logged at INFO.

    Keys that start with an `ignore_keys` prefix are dropped from the checkpoint. Model keys under
    such a prefix are not counted as missing, because ignoring a subtree means the model keeps its
    own initialisation there. `state_dict` is never mutated. Shape mismatches are checked before
    anything is copied, so they leave `module` untouched, and the error names the key and both
    shapes. With `strict=True`, missing or unexpected keys raise `RuntimeError` after the load (as in
    torch). `source` (e.g. the checkpoint path) is used in messages.
    """
    prefixes = (ignore_keys,) if isinstance(ignore_keys, str) else tuple(ignore_keys)
    where = f" from {source}" if source else ""
    kept = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith(prefixes))
    ignored = [k for k in state_dict if k.startswith(prefixes)]
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:  # per-module versions that e.g. BatchNorm's loading consults
        kept._metadata = metadata

    own = module.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in kept.items()
                  if k in own and isinstance(v, torch.Tensor) and isinstance(own[k], torch.Tensor)
                  and not nn.parameter.is_lazy(own[k]) and v.shape != own[k].shape]
    if mismatched:
        raise RuntimeError(f"shape mismatch loading state dict{where} into {type(module).__name__} "
                           "(nothing was loaded):\n  " + "\n  ".join(mismatched))
    try:
        result = module.load_state_dict(kept, strict=False)
    except RuntimeError as err:
        raise RuntimeError(f"loading state dict{where} into {type(module).__name__} failed: {err}") from err

    report = LoadReport(missing=[k for k in result.missing_keys if not k.startswith(prefixes)],
                        unexpected=list(result.unexpected_keys), ignored=ignored,
                        loaded=len(kept) - len(result.unexpected_keys), source=source)
    if report.missing or report.unexpected:  # a warning, not a log line: a dropped key must never go unseen
        warnings.warn(report.summary(), CheckpointKeysWarning, stacklevel=2)
    else:
        logger.info(report.summary())
    if strict and (report.missing or report.unexpected):
        raise RuntimeError(f"strict load of state dict{where} into {type(module).__name__}: "
                           f"missing keys {report.missing}, unexpected keys {report.unexpected}")
    return report


TEMP_SUFFIX = ".tmp"


def _temp_path(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")


def _fsync_directory(directory: str) -> None:
    """Make a rename in `directory` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: Union[str, os.PathLike]) -> None:
    """`torch.save(obj, path)` that never leaves a half-written file at `path`.

    Writes `.<name>.<random hex>.tmp` next to `path`, fsyncs it, renames it over `path` with
    `os.replace` (atomic on POSIX and Windows within one filesystem) and fsyncs the folder, so that
    after a crash or a power cut `path` is either the old file or the new one. If the write fails
    (a full disk, an interrupt), the temp file is removed and an existing file at `path` is left as
    it was. A process killed with SIGKILL mid-write leaves its temp file behind:
    `remove_stale_temp_files` clears those.
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = _temp_path(path)
    try:
        torch.save(obj, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data must be on disk before the rename makes it visible
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # includes KeyboardInterrupt mid-save
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{32}" + re.escape(TEMP_SUFFIX))


def temp_files(directory: Union[str, os.PathLike]) -> List[str]:
    """The temp files `atomic_save` left in `directory` (a writer that was killed), sorted."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if _TEMP_NAME.fullmatch(n))


def remove_stale_temp_files(directory: Union[str, os.PathLike]) -> List[str]:
    """Delete the temp files of `atomic_save` writers that died in `directory`; returns their paths.
    Only call it when no other process is writing there (main.py does, before training starts)."""
    removed = []
    for path in temp_files(directory):
        try:
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning `CheckpointIO` plugin: `Trainer(plugins=[SafeCheckpointIO()])`.

    How it differs from `TorchCheckpointIO`: loading (`trainer.fit(ckpt_path=...)`) goes through
    `load_checkpoint`, so pickled code is refused unless `unsafe=True`. Saving uses `atomic_save`,
    where upstream writes the target file in place. Local paths only.
    """

    def __init__(self, unsafe: bool = False):
        super().__init__()
        self.unsafe = unsafe

    def load_checkpoint(self, path, map_location: Any = None, weights_only: Optional[bool] = None) -> dict:
        # `weights_only=True` (`trainer.fit(..., weights_only=True)`) forces safe mode. `False` is not an
        # opt-in on its own, so that `unsafe` stays the one switch.
        unsafe = self.unsafe and weights_only is not True
        return load_checkpoint(path, unsafe=unsafe, map_location="cpu" if map_location is None else map_location)

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not support storage_options")
        atomic_save(checkpoint, path)
