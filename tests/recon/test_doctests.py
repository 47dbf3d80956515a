"""The examples in the reconstruction modules' docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["cli", "coils", "detect", "gaps", "h5", "h5chunks", "header", "image", "io_ismrmrd",
           "ismrmrd_images", "ismrmrd_types", "masks", "methods", "metrics", "phantom",
           "zerofilled"]  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"voxelhub.recon.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
