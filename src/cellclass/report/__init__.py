"""The HTML reports (layer 6): one results folder (`build`, with its sections in `sections`
and rendering in `html`), several experiments of one study (`study`); templates in
``templates/``.
"""

from cellclass.report.build import preview_folder, read_results, write_preview, write_report
from cellclass.report.findings import study_findings
from cellclass.report.study import write_study_report

__all__ = [
    "preview_folder",
    "read_results",
    "study_findings",
    "write_preview",
    "write_report",
    "write_study_report",
]
