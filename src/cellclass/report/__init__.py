"""The HTML reports (layer 6): one results folder (`build`), several experiments of one study
(`study`, with its sentences in `findings`), and the HTML rendering both use (`html`);
templates in ``templates/``. (`sections` is a shim for `study`'s old import.)
"""

from cellclass.report.build import (
    Results,
    preview_folder,
    read_results,
    write_preview,
    write_report,
)
from cellclass.report.findings import study_findings
from cellclass.report.study import write_study_report

__all__ = [
    "Results",
    "preview_folder",
    "read_results",
    "study_findings",
    "write_preview",
    "write_report",
    "write_study_report",
]
