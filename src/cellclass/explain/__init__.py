"""Why the network answers as it does (layer 5): attribution maps (`attribution`), probes
(`probes`: calibration, adversarial flips, brightness confound, loss vs accuracy), the explain
step over a results folder (`step`, with the probes' part in `probe_step`) and what both
share (`common`).
"""

from cellclass.explain.attribution import (
    METHODS,
    SIGNED,
    class_average_maps,
    class_score,
    explain_batch,
    grad_cam,
    gradient_x_input,
    occlusion,
)
from cellclass.explain.probes import (
    Calibration,
    fgsm,
    fit_calibration,
    flip_sweep,
    recalibrate,
    write_calibration,
)
from cellclass.explain.step import EXPLAIN_FILE, ExplainSettings, explain_run, explain_section

__all__ = [
    "Calibration",
    "EXPLAIN_FILE",
    "ExplainSettings",
    "METHODS",
    "SIGNED",
    "class_average_maps",
    "class_score",
    "explain_batch",
    "explain_run",
    "explain_section",
    "fgsm",
    "fit_calibration",
    "flip_sweep",
    "grad_cam",
    "gradient_x_input",
    "occlusion",
    "recalibrate",
    "write_calibration",
]
