"""Pieces every ilat_ext LightningModule shares: checkpoint loading that reports keys, and
checkpoints that carry the config that built them."""
from typing import Optional, Sequence

from ilat_ext.checkpoint import LoadReport, load_checkpoint, load_state_dict_report

# Bumped when the layout of what we add to checkpoints changes.
CHECKPOINT_FORMAT = 1


class CheckpointMixin:
    """`init_from_ckpt` through the safe loader, and `build_config` saved with every checkpoint.

    `build_config` is the `model:` config section (plain dict) that main.py sets after building the
    model; `on_save_checkpoint` stores it under `checkpoint["ilat_ext"]["config"]`.
    """

    build_config: Optional[dict] = None
    ckpt_load_report: Optional[LoadReport] = None

    def init_from_ckpt(self, path: str, ignore_keys: Sequence[str] = (), unsafe: Optional[bool] = None) -> LoadReport:
        """Load `path`'s `state_dict` (keys starting with an `ignore_keys` prefix are dropped) and
        report missing and unexpected keys. Returns the report (also kept as `ckpt_load_report`)."""
        checkpoint = load_checkpoint(path, unsafe=unsafe)
        report = load_state_dict_report(self, checkpoint["state_dict"], ignore_keys=tuple(ignore_keys or ()),
                                        source=str(path))
        self.ckpt_load_report = report
        return report

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ilat_ext"] = {"format": CHECKPOINT_FORMAT, "class": f"{type(self).__module__}.{type(self).__name__}",
                                  "config": self.build_config}
