"""Datasets and data modules."""
from ilat_ext.data.datamodule import DataModuleFromConfig, WrappedDataset
from ilat_ext.data.faces import FaceDataset
from ilat_ext.data.penn_action import PennAction
from ilat_ext.data.sdf import SDFPairs, build_sdf
from ilat_ext.data.toy import ToyFaces
from ilat_ext.data.toy_pose import ToyPoses

__all__ = ["DataModuleFromConfig", "WrappedDataset", "ToyFaces", "FaceDataset", "ToyPoses", "PennAction", "SDFPairs",
           "build_sdf"]
