"""Upstream taming's datasets that read fixed paths (ImageNet, FacesHQ, COCO, S-FLCKR): which files
each needs, checked before any of them is built.

Upstream's classes find their data at paths written in their code (`data/celebahq`, `data/coco/...`,
`~/.cache/autoencoders/data/ILSVRC2012_train`) and fail deep inside, or start a download, when it
is not there. `check_data_files(data_config)` walks a `data:` config and raises `DataFilesMissing`
naming the first missing path and what to put there; main.py calls it before it builds anything,
so no run folder is created. Targets upstream's configs name that the PyPI package does not have
at all, and that we have no drop-in for, are named too.

    >>> check_data_files({"target": "main.DataModuleFromConfig", "params": {"batch_size": 1}})
"""
import os
from typing import Any, Callable, Dict, List, Mapping, Tuple

from ilat_ext.data.checks import DataFilesMissing

Need = Tuple[str, str]  # (path, what to put there)


def _imagenet(split: str) -> Callable[[Mapping], List[Need]]:
    name, tar = {"train": ("ILSVRC2012_train", "ILSVRC2012_img_train.tar"),
                 "validation": ("ILSVRC2012_validation", "ILSVRC2012_img_val.tar")}[split]

    def needs(params: Mapping) -> List[Need]:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "autoencoders", "data", name)
        if os.path.isfile(os.path.join(root, ".ready")):  # upstream's marker of a prepared split
            return []
        extra = (" and validation_synset.txt (upstream's synset of each validation image)" if split == "validation"
                 else "")
        return [(os.path.join(root, tar), f"ImageNet's {tar} from image-net.org{extra}; upstream extracts it on "
                                          "first use (it would otherwise try to download it)")]
    return needs


def _files(*needs: Need) -> Callable[[Mapping], List[Need]]:
    return lambda params: list(needs)


_CELEBAHQ = ("data/celebahq", "CelebA-HQ as upstream's .npy files (one image each, 1 x 3 x 1024 x 1024)")
_FFHQ = ("data/ffhq", "the FFHQ images")


def _coco(split: str) -> Callable[[Mapping], List[Need]]:
    def needs(params: Mapping) -> List[Need]:
        stuff = (f"data/cocostuffthings/{split}2017", "the COCO-Stuff stuff+thing label maps (.png)") \
            if params.get("use_stuffthing") else \
            (f"data/coco/annotations/stuff_{split}2017_pixelmaps", "the COCO-Stuff pixel maps (.png)")
        return [(f"data/coco/annotations/captions_{split}2017.json", f"COCO's {split}2017 captions file"),
                (f"data/coco/{split}2017", f"COCO's {split}2017 images"), stuff]
    return needs


# upstream target -> the files it reads (relative paths: from the current directory, as upstream)
UPSTREAM_DATA_FILES: Dict[str, Callable[[Mapping], List[Need]]] = {
    "taming.data.imagenet.ImageNetTrain": _imagenet("train"),
    "taming.data.imagenet.ImageNetValidation": _imagenet("validation"),
    "taming.data.faceshq.CelebAHQTrain": _files(_CELEBAHQ, ("data/celebahqtrain.txt", "the CelebA-HQ training file names")),
    "taming.data.faceshq.CelebAHQValidation": _files(_CELEBAHQ, ("data/celebahqvalidation.txt",
                                                                 "the CelebA-HQ validation file names")),
    "taming.data.faceshq.FFHQTrain": _files(_FFHQ, ("data/ffhqtrain.txt", "the FFHQ training file names")),
    "taming.data.faceshq.FFHQValidation": _files(_FFHQ, ("data/ffhqvalidation.txt", "the FFHQ validation file names")),
    "taming.data.faceshq.FacesHQTrain": _files(_CELEBAHQ, ("data/celebahqtrain.txt", "the CelebA-HQ training file names"),
                                               _FFHQ, ("data/ffhqtrain.txt", "the FFHQ training file names")),
    "taming.data.faceshq.FacesHQValidation": _files(_CELEBAHQ, ("data/celebahqvalidation.txt",
                                                                "the CelebA-HQ validation file names"),
                                                    _FFHQ, ("data/ffhqvalidation.txt", "the FFHQ validation file names")),
    "taming.data.coco.CocoImagesAndCaptionsTrain": _coco("train"),
    "taming.data.coco.CocoImagesAndCaptionsValidation": _coco("val"),
    "taming.data.coco.Examples": _files(("data/coco_examples.txt", "the example file names"),
                                        ("data/coco_images", "the example images"),
                                        ("data/coco_segmentations", "their segmentations (.png)")),
    "taming.data.sflckr.Examples": _files(("data/sflckr_examples.txt", "the example file names"),
                                          ("data/sflckr_images", "the example images"),
                                          ("data/sflckr_segmentations", "their segmentations (.png)")),
}

# Named by upstream's configs, absent from the PyPI package, and not ported here.
NOT_PORTED = {
    "taming.data.annotated_objects_coco.": "the COCO scene-image data (upstream's annotated_objects_coco.py, with its "
                                           "conditional builders)",
    "taming.data.annotated_objects_open_images.": "the Open Images scene-image data (upstream's "
                                                  "annotated_objects_open_images.py)",
}


def _targets(node: Any, depth: int = 0):
    if depth > 8:
        return
    if isinstance(node, Mapping):
        if isinstance(node.get("target"), str):
            yield node
        for value in node.values():
            yield from _targets(value, depth + 1)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _targets(value, depth + 1)


def check_data_files(data_config: Mapping) -> None:
    """Raise `DataFilesMissing` for the first file an upstream dataset in `data_config` (a plain
    mapping, e.g. `OmegaConf.to_container(config.data)`) needs and does not find."""
    for node in _targets(data_config):
        target = node["target"]
        for prefix, what in NOT_PORTED.items():
            if target.startswith(prefix):
                raise DataFilesMissing(f"{target} is not available: the PyPI taming-transformers package lacks {what}, "
                                       "and ilat_ext has no drop-in for it")
        needs = UPSTREAM_DATA_FILES.get(target)
        if needs is None:
            continue
        for path, what in needs(node.get("params") or {}):
            if not os.path.exists(path):
                where = path if os.path.isabs(path) else f"{path} (relative to {os.getcwd()})"
                raise DataFilesMissing(f"{target} needs {where}: put {what} there")
