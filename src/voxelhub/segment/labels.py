"""What each label of a label map means, coded for DICOM (SNOMED CT category and type).

>>> spleen = coded_label(1, "spleen")
>>> spleen.property_type.meaning, spleen.category.meaning
('Spleen', 'Anatomical Structure')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.sr.coding import Code

ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
_NEOPLASM = Code("108369006", "SCT", "Neoplasm")
_MAX_LO = 64

# Names models give their labels (lower case, spaces for separators) → (category, type).
_KNOWN: dict[str, tuple[Code, Code]] = {
    "spleen": (ANATOMICAL_STRUCTURE, Code("78961009", "SCT", "Spleen")),
    "liver": (ANATOMICAL_STRUCTURE, Code("10200004", "SCT", "Liver")),
    "kidney": (ANATOMICAL_STRUCTURE, Code("64033007", "SCT", "Kidney")),
    "pancreas": (ANATOMICAL_STRUCTURE, Code("15776009", "SCT", "Pancreas")),
    "lung": (ANATOMICAL_STRUCTURE, Code("39607008", "SCT", "Lung")),
    "bone": (TISSUE, Code("272673000", "SCT", "Bone")),
    "tumor core": (ABNORMAL_STRUCTURE, _NEOPLASM),
    "whole tumor": (ABNORMAL_STRUCTURE, _NEOPLASM),
    "enhancing tumor": (ABNORMAL_STRUCTURE, _NEOPLASM),
    "tumor": (ABNORMAL_STRUCTURE, _NEOPLASM),
    "necrosis": (ABNORMAL_STRUCTURE, Code("6574001", "SCT", "Necrosis")),
    "necrotic core": (ABNORMAL_STRUCTURE, Code("6574001", "SCT", "Necrosis")),
    "edema": (ABNORMAL_STRUCTURE, Code("79654002", "SCT", "Edema")),
}
_ALIASES = {
    "tc": "tumor core",
    "wt": "whole tumor",
    "et": "enhancing tumor",
    "oedema": "edema",
    "tumour": "tumor",
    "tumour core": "tumor core",
    "whole tumour": "whole tumor",
    "enhancing tumour": "enhancing tumor",
    "ncr": "necrotic core",
    "ed": "edema",
}


@dataclass(frozen=True)
class LabelInfo:
    """One label value of a label map: its name and its coded category and type."""

    value: int
    name: str
    category: Code
    property_type: Code

    def __post_init__(self) -> None:
        if not 1 <= self.value <= 255:
            raise ValueError(
                f"Label {self.name!r} has value {self.value}; labels run from 1 to 255 "
                "(0 is background)."
            )
        if not self.name or len(self.name) > _MAX_LO or "\\" in self.name:
            raise ValueError(
                f"Label {self.value} name {self.name!r} must be 1 to {_MAX_LO} characters "
                "without a backslash (it becomes a DICOM LO value)."
            )


def coded_label(
    value: int,
    name: str,
    *,
    category: Code | None = None,
    property_type: Code | None = None,
) -> LabelInfo:
    """A label with codes given, or looked up by name (spleen, tumor core, edema, ...).

    Names not in the table get category Tissue and a type "Tissue" coded as SCT 85756007,
    so the SEG stays valid; give explicit codes in the model card for better ones.
    """
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    key = _ALIASES.get(key, key)
    known_category, known_type = _KNOWN.get(key, (TISSUE, TISSUE))
    return LabelInfo(
        value, name, category=category or known_category, property_type=property_type or known_type
    )


def code_from_json(value: object, *, where: str) -> Code:
    """A Code from JSON: [value, scheme, meaning] or {"value", "scheme", "meaning"}."""
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value):
        return Code(value[0], value[1], value[2])
    if isinstance(value, dict) and {"value", "scheme", "meaning"} <= value.keys():
        return Code(str(value["value"]), str(value["scheme"]), str(value["meaning"]))
    raise ValueError(
        f"{where}: a code is [value, scheme, meaning], e.g. "
        '["78961009", "SCT", "Spleen"], not ' + repr(value)
    )
