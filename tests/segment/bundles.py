"""MONAI bundles with the model zoo's structure and configs, small weights, for tests.

The configs follow `spleen_ct_segmentation` and `brats_mri_segmentation` from the MONAI
model zoo, shrunk only where size matters (network channels, ROI).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import SegResNet, UNet

SPLEEN_METADATA: dict[str, Any] = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
    "version": "0.5.3",
    "monai_version": "1.3.0",
    "pytorch_version": "2.1.0",
    "numpy_version": "1.24.4",
    "name": "Spleen CT segmentation",
    "task": "Decathlon spleen segmentation",
    "description": (
        "A pre-trained model for volumetric (3D) segmentation of the spleen from CT image"
    ),
    "authors": "MONAI team",
    "copyright": "Copyright (c) MONAI Consortium",
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "hounsfield",
                "modality": "CT",
                "num_channels": 1,
                "spatial_shape": [96, 96, 96],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
                "channel_def": {"0": "image"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": [96, 96, 96],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
                "channel_def": {"0": "background", "1": "spleen"},
            }
        },
    },
}


def spleen_inference(*, channels: list[int], roi: int) -> dict[str, Any]:
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data/Task09_Spleen",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {
            "_target_": "UNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 2,
            "channels": channels,
            "strides": [2] * (len(channels) - 1),
            "num_res_units": 2,
            "norm": "batch",
        },
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {
                    "_target_": "Spacingd",
                    "keys": "image",
                    "pixdim": [1.5, 1.5, 2.0],
                    "mode": "bilinear",
                },
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": -57,
                    "a_max": 164,
                    "b_min": 0,
                    "b_max": 1,
                    "clip": True,
                },
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 4,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [roi, roi, roi],
            "sw_batch_size": 4,
            "overlap": 0.5,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "meta_key_postfix": "meta_dict",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "resample": False,
                    "squeeze_end_dims": True,
                },
            ],
        },
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
            },
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": True,
        },
        "initialize": ["$monai.utils.set_determinism(seed=123)"],
        "run": ["$@evaluator.run()"],
    }


BRATS_METADATA: dict[str, Any] = {
    "schema": SPLEEN_METADATA["schema"],
    "version": "0.5.0",
    "monai_version": "1.3.0",
    "name": "BraTS MRI segmentation",
    "task": "Multimodal Brain Tumor segmentation",
    "description": (
        "A pre-trained model for volumetric (3D) segmentation of brain tumor subregions "
        "from multimodal MRIs based on BraTS 2018 data"
    ),
    "authors": "MONAI team",
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "magnitude",
                "modality": "MR",
                "num_channels": 4,
                "spatial_shape": [224, 224, 144],
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": False,
                "channel_def": {"0": "T1c", "1": "T1", "2": "T2", "3": "FLAIR"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 3,
                "spatial_shape": [224, 224, 144],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": {"0": "Tumor core", "1": "Whole tumor", "2": "Enhancing tumor"},
            }
        },
    },
}


def brats_inference(*, init_filters: int, roi: list[int]) -> dict[str, Any]:
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data/medical/brats2018challenge",
        "data_list_file_path": "$@bundle_root + '/configs/datalist.json'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {
            "_target_": "SegResNet",
            "blocks_down": [1, 2, 2, 4],
            "blocks_up": [1, 1, 1],
            "init_filters": init_filters,
            "in_channels": 4,
            "out_channels": 3,
            "dropout_prob": 0.2,
        },
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {
                    "_target_": "NormalizeIntensityd",
                    "keys": "image",
                    "nonzero": True,
                    "channel_wise": True,
                },
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": roi,
            "sw_batch_size": 1,
            "overlap": 0.5,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
                {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "resample": False,
                },
            ],
        },
        "run": ["$@evaluator.run()"],
    }


def write_bundle(
    root: Path, metadata: dict[str, Any], inference: dict[str, Any], network: torch.nn.Module
) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


def spleen_network(channels: list[int]) -> UNet:
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=channels,
        strides=[2] * (len(channels) - 1),
        num_res_units=2,
        norm="batch",
    )


def brats_network(init_filters: int) -> SegResNet:
    return SegResNet(
        blocks_down=[1, 2, 2, 4],
        blocks_up=[1, 1, 1],
        init_filters=init_filters,
        in_channels=4,
        out_channels=3,
        dropout_prob=0.2,
    )


def balance_classes(network: torch.nn.Module, sample: torch.Tensor) -> None:
    """Shift the last convolution's foreground bias so that about half of `sample` is label 1.

    A U-Net with random weights labels nearly everything alike; balanced label maps are
    full of boundaries, which is what runtime agreement tests need.
    """
    network.eval()
    with torch.no_grad():
        logits = network(sample)
        margin = float(torch.median(logits[:, 1] - logits[:, 0]))
        last = [
            m
            for m in network.modules()
            if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)
        ][-1]
        assert last.bias is not None
        last.bias[1] -= margin
