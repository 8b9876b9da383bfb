"""Inspect a class-folder dataset before training (layer 2): decoding and hashing each image
once and confirming duplicate pairs pixel by pixel (`scan`); per-class statistics, duplicates,
leakage between folders and the printed report (`dataset`); a train/test split that keeps
source fields and duplicates on one side (`splitting`).
"""

from cellclass.inspection.dataset import (
    CONFOUND_EFFECT,
    ClassSummary,
    FolderReport,
    InspectionReport,
    InspectSettings,
    brightness_confounds,
    find_leakage,
    format_report,
    inspect_dataset,
    leakage_message,
    write_report_json,
)
from cellclass.inspection.scan import (
    HASH_FREQUENCIES,
    HASH_SIDE,
    MIN_SIMILARITY,
    TRANSFORMS,
    DuplicatePair,
    ScanResult,
    scan_images,
)
from cellclass.inspection.splitting import (
    SplitResult,
    SplitSettings,
    format_split,
    split_folder,
)

__all__ = [
    "SplitResult",
    "SplitSettings",
    "format_split",
    "split_folder",
    "CONFOUND_EFFECT",
    "ClassSummary",
    "DuplicatePair",
    "FolderReport",
    "HASH_FREQUENCIES",
    "HASH_SIDE",
    "InspectSettings",
    "InspectionReport",
    "MIN_SIMILARITY",
    "ScanResult",
    "TRANSFORMS",
    "brightness_confounds",
    "find_leakage",
    "format_report",
    "inspect_dataset",
    "leakage_message",
    "scan_images",
    "write_report_json",
]
