"""Figures (layer 4): each figure one function, tidy data in, PNG out, drawn on its own
`matplotlib.figure.Figure` (never pyplot): the results folder's figures (`plots`), the explain
probes' (`probes`) and attribution maps (`explain`); the shared drawing helpers (`drawing`).
"""

from cellclass.figures.explain import (
    MapRow,
    attribution_figure,
    normalize_maps,
    overlay,
    prediction_title,
)
from cellclass.figures.plots import (
    accuracy_boxplot,
    confusion_figure,
    draw_accuracy_boxplot,
    draw_confusion_figure,
    draw_reliability_figure,
    draw_training_curves,
    prediction_labels,
    prediction_panel,
    preview_grid,
    reliability_figure,
    training_curves,
)
from cellclass.figures.probes import (
    adversarial_examples_figure,
    flip_sweep_figure,
    intensity_histograms,
    loss_accuracy_figure,
    reliability_comparison,
)

__all__ = [
    "MapRow",
    "accuracy_boxplot",
    "adversarial_examples_figure",
    "attribution_figure",
    "confusion_figure",
    "draw_accuracy_boxplot",
    "draw_confusion_figure",
    "draw_reliability_figure",
    "draw_training_curves",
    "flip_sweep_figure",
    "intensity_histograms",
    "loss_accuracy_figure",
    "normalize_maps",
    "overlay",
    "prediction_labels",
    "prediction_panel",
    "prediction_title",
    "preview_grid",
    "reliability_comparison",
    "reliability_figure",
    "training_curves",
]
