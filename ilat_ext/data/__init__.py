"""Datasets and data modules."""
from ilat_ext.data.datamodule import DataModuleFromConfig, WrappedDataset
from ilat_ext.data.faces import FaceDataset
from ilat_ext.data.toy import ToyFaces

__all__ = ["DataModuleFromConfig", "WrappedDataset", "ToyFaces"]
