"""Synthetic fluorescence fields (layer 1): drawing one field (`rendering`), class folders and
the demo data (`folders`), and phenotype families from other generators for benchmarks
(`phenotypes`).
"""

from cellclass.synthetic.folders import (
    DEMO_DATASETS,
    DEMO_SESSIONS,
    FORMATS,
    PHENOTYPES,
    DemoData,
    DemoDataset,
    make_field,
    write_class_folders,
    write_demo,
)
from cellclass.synthetic.phenotypes import (
    FAMILIES,
    Family,
    PhenotypeData,
    draw_field,
    write_aggregates,
    write_density,
    write_family,
    write_shape,
)
from cellclass.synthetic.rendering import MAX_VALUE, Phenotype, Session, render_field

__all__ = [
    "DEMO_DATASETS",
    "DEMO_SESSIONS",
    "FAMILIES",
    "FORMATS",
    "MAX_VALUE",
    "PHENOTYPES",
    "DemoData",
    "DemoDataset",
    "Family",
    "Phenotype",
    "PhenotypeData",
    "Session",
    "draw_field",
    "make_field",
    "render_field",
    "write_aggregates",
    "write_class_folders",
    "write_demo",
    "write_density",
    "write_family",
    "write_shape",
]
