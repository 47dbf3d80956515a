"""The device a GPU benchmark was asked to run on."""

from __future__ import annotations

import sys

import torch


def unavailable(device: str) -> bool:
    """True, having said why, when `device` is a CUDA GPU that torch cannot see."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU here; run with --device cpu for a smoke run", file=sys.stderr)
        return True
    return False
