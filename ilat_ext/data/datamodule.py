"""`DataModuleFromConfig`: taming's data module (`target:` datasets per split) on Lightning 2."""
import os
from typing import Mapping, Optional

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from ilat_ext.util import instantiate_from_config


class WrappedDataset(Dataset):
    """Wraps any object with `__len__` and `__getitem__` into a torch Dataset."""

    def __init__(self, dataset):
        self.data = dataset

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        return self.data[idx]


class DataModuleFromConfig(pl.LightningDataModule):
    """Datasets built from `train`/`validation`/`test` configs; same arguments as upstream.

    Only the splits that are configured get a dataloader method, so Lightning skips validation
    and testing when there is nothing to run them on. `num_workers` defaults to upstream's
    `2 * batch_size`, capped at the number of CPUs.
    """

    def __init__(self, batch_size: int, train: Optional[Mapping] = None, validation: Optional[Mapping] = None,
                 test: Optional[Mapping] = None, wrap: bool = False, num_workers: Optional[int] = None,
                 persistent_workers: bool = True):
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"data.params.batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        if num_workers is None:
            num_workers = min(2 * self.batch_size, os.cpu_count() or 1)
        self.num_workers = int(num_workers)
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.dataset_configs = {}
        if train is not None:
            self.dataset_configs["train"] = train
            self.train_dataloader = self._train_dataloader
        if validation is not None:
            self.dataset_configs["validation"] = validation
            self.val_dataloader = self._val_dataloader
        if test is not None:
            self.dataset_configs["test"] = test
            self.test_dataloader = self._test_dataloader
        if not self.dataset_configs:
            raise ValueError("data.params needs at least one of train, validation, test")
        self.wrap = wrap
        self.datasets = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets is not None:
            return
        self.datasets = {k: instantiate_from_config(cfg) for k, cfg in self.dataset_configs.items()}
        if self.wrap:
            self.datasets = {k: WrappedDataset(v) for k, v in self.datasets.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(self.datasets[split], batch_size=self.batch_size, num_workers=self.num_workers,
                          shuffle=shuffle, persistent_workers=self.persistent_workers)

    def _train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def _val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def _test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
