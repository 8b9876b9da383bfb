"""The whole study as one call: what the ``cellclass`` command and notebooks both use.

`run_study` trains and evaluates every run of one experiment (`cellclass.training`), explains
it when asked (`cellclass.explain`) and writes its report (`cellclass.report`); `run_demo` does
that for each of the demo's two datasets and writes one page over both. Both return where
everything went and the summary rows (one per model and test set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cellclass.demo import REDUCTION_NOTE, DemoSettings, prepare_demo
from cellclass.explain.step import explain_run
from cellclass.progress import Observer
from cellclass.report import write_report, write_study_report
from cellclass.report.study import Finding, study_findings
from cellclass.summary import model_comparisons, summary_table
from cellclass.synthetic.folders import DemoData
from cellclass.training import ExperimentSettings, run_experiment

__all__ = ["DemoResult", "StudyResult", "run_demo", "run_study"]


@dataclass(frozen=True)
class StudyResult:
    out: Path  # the results folder (config.json, runs.csv, epochs.csv, predictions.csv, ...)
    report: Path  # its report.html
    summary: list[dict]  # `cellclass.summary.summary_table` rows
    comparisons: list[dict]  # `cellclass.summary.model_comparisons` rows (several models)
    explain: Path | None = None  # the explain folder, when explanations were asked for


@dataclass(frozen=True)
class DemoResult:
    data: DemoData  # where the demo images were written
    studies: dict[str, StudyResult]  # one experiment per dataset ("snap29", "snf7")
    report: Path  # the page over both datasets
    findings: list[Finding] = field(default_factory=list)  # the answer, one per dataset/model
    note: str = ""  # how the demo reduces the study's protocol


def run_study(
    settings: ExperimentSettings,
    *,
    resume: bool = False,
    explain: bool = False,
    observer: Observer | None = None,
) -> StudyResult:
    """Train and evaluate every run, optionally explain them, and write the report.

    Raises the errors of `cellclass.training.run_experiment` (bad settings or data, found
    before any training starts).
    """
    out = run_experiment(settings, resume=resume, observer=observer)
    explained = explain_run(out) if explain else None
    return StudyResult(
        out=out,
        report=write_report(out),
        summary=summary_table(out),
        comparisons=model_comparisons(out),
        explain=explained,
    )


def run_demo(
    root: str | Path,
    demo: DemoSettings | None = None,
    *,
    observer: Observer | None = None,
    on_study=None,
) -> DemoResult:
    """Write the demo data under ``root``, run the study on each dataset, write the page over
    both (``root/results/report.html``). ``on_study(name, result)`` is called after each;
    ``demo`` None uses the `DemoSettings` defaults."""
    demo = demo or DemoSettings()
    data, experiments = prepare_demo(root, demo)
    studies = {}
    for name, settings in experiments.items():
        studies[name] = run_study(settings, observer=observer)
        if on_study is not None:
            on_study(name, studies[name])
    note = REDUCTION_NOTE.format(
        runs=demo.runs,
        n_train=demo.n_train,
        image_size=demo.image_size,
        strong_epochs=demo.strong_epochs,
    )
    run_dirs = {name: study.out for name, study in studies.items()}
    page = write_study_report(
        run_dirs,
        Path(root) / "results" / "report.html",
        title="cellclass demo: the study's two experiments (synthetic data)",
        notes=(note,),
    )
    return DemoResult(data, studies, page, study_findings(run_dirs), note)
