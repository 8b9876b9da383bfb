"""Human versus network on the very same test images, with paired statistics.

The scorer's answers (from the scores database) are matched to the rows of ``predictions.csv``
for one test set by the image's path inside its test folder, so moving the folder between
training and scoring does not matter. The statistics on the paired images are
`cellclass.blind.paired.paired_statistics`. Images scored but not predicted, or predicted but
not scored, are listed, never silently dropped. `write_comparison` saves the result next to
the runs and marks the expert's accuracy in config.json for the report's box plot.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass.blind.paired import PairedAnswers, paired_statistics
from cellclass.blind.scoring import answer_rows
from cellclass.blind.store import Session, open_store


def compare_human(
    run_dir: str | Path,
    db: str | Path,
    test_name: str,
    *,
    scorer: str | None = None,
    model: str | None = None,
    seed: int = 0,
) -> dict:
    """Compare one scorer with the network runs of a results folder on one test set.

    Parameters
    ----------
    run_dir : results folder (config.json, runs.csv, predictions.csv).
    db : scores database written by ``cellclass blind serve``.
    test_name : the test set's name in the results folder.
    scorer, model : whose answers and which architecture's runs; optional when there is one.
    seed : seed of the bootstrap.

    Returns
    -------
    dict
        JSON-ready: what was compared, ``unmatched`` images and `paired_statistics`.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing files; an unknown test set, scorer or model; no image in common; true labels
        that differ between the scored folder and the test set.
    """
    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    tested_root = _tested_folder(config, test_name, run_dir)
    store = open_store(db, create=False)
    session = _choose_scorer(store.sessions(), scorer, db)
    human = {
        _inside(row["path"], session.test_dir): row
        for row in answer_rows(store, scorer=session.scorer)
        if not row["is_repeat"]
    }
    network, partial, model = _network_rows(run_dir, test_name, model)
    predicted = {_inside(path, tested_root): rows for path, rows in network.items()}
    common = sorted(set(human) & set(predicted))
    if not common:
        raise ValueError(
            f"no image in common: scorer {session.scorer!r} scored "
            f"{session.test_dir}, test set {test_name!r} is {tested_root}"
        )
    comparison = {
        "test": test_name,
        "scorer": session.scorer,
        "model": model,
        "run_dir": str(run_dir),
        "scored_folder": session.test_dir,
        "tested_folder": tested_root,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "unmatched": _unmatched(human, predicted, [_inside(p, tested_root) for p in partial]),
    }
    paired = _paired_arrays(common, human, predicted, tuple(config["class_names"]))
    return comparison | paired_statistics(paired, rng=np.random.default_rng(seed))


def _unmatched(human: dict, predicted: dict, partial: list[str]) -> dict[str, list[str]]:
    """Images left out of the pairing, by reason (paths inside the test folder)."""
    return {
        "scored_not_predicted": sorted(set(human) - set(predicted)),
        "predicted_not_scored": sorted(set(predicted) - set(human)),
        "predicted_by_some_runs_only": sorted(partial),
    }


def _tested_folder(config: dict, test_name: str, run_dir: Path) -> str:
    """The folder the test set ``test_name`` was read from during training."""
    tests = config.get("tests", {})
    if test_name not in tests:
        raise ValueError(
            f"test_name={test_name}: {run_dir} has test sets {', '.join(tests) or 'none'}"
        )
    return str(tests[test_name].get("path", ""))


def _read_config(run_dir: Path) -> dict:
    path = run_dir / results.CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json; not a cellclass results folder")
    return results.read_json(path)


def _choose_scorer(sessions: list[Session], scorer: str | None, db) -> Session:
    names = [session.scorer for session in sessions]
    if not sessions:
        raise ValueError(f"db={db}: no scorer has started yet")
    if scorer is None and len(sessions) > 1:
        raise ValueError(
            f"db={db} holds several scorers ({', '.join(names)}); pick one with scorer="
        )
    if scorer is None:
        return sessions[0]
    if scorer not in names:
        raise ValueError(f"scorer={scorer}: not in {db}; scorers there: {', '.join(names)}")
    return sessions[names.index(scorer)]


def _is_control(value) -> bool:
    return str(value).strip().lower() not in ("", "0", "false", "none")


def _network_rows(run_dir: Path, test_name: str, model: str | None) -> tuple[dict, list, str]:
    """Prediction rows of the real (not label-shuffled) runs of one model.

    Returns ``{path: {run: row}}`` of the images every run predicted, the paths only some runs
    predicted, and the model name.
    """
    controls = {
        (row["run"], str(row["model"]))
        for row in results.read_table(run_dir / results.RUNS_FILE)
        if _is_control(row.get("control", ""))
    }
    rows = [
        row
        for row in results.read_table(run_dir / results.PREDICTIONS_FILE)
        if row["dataset"] == test_name
        and not _is_control(row.get("control", ""))
        and (row["run"], str(row["model"])) not in controls
    ]
    models = sorted({str(row["model"]) for row in rows})
    if not models:
        raise ValueError(f"{run_dir}: predictions.csv has no rows for test set {test_name!r}")
    if model is None and len(models) > 1:
        raise ValueError(
            f"{run_dir} holds runs of several models ({', '.join(models)}); pick one with model="
        )
    model = model if model is not None else models[0]
    if model not in models:
        raise ValueError(
            f"model={model}: no runs of it in {run_dir}; models there: {', '.join(models)}"
        )
    network: dict[str, dict[int, dict]] = {}
    for row in rows:
        if str(row["model"]) == model:
            network.setdefault(str(row["path"]), {})[int(row["run"])] = row
    n_runs = len({run for runs in network.values() for run in runs})
    complete = {path: runs for path, runs in network.items() if len(runs) == n_runs}
    return complete, sorted(set(network) - set(complete)), model


def _inside(path: str, root: str) -> str:
    """``path`` relative to ``root`` in POSIX form (the absolute path if it is not inside)."""
    try:
        return Path(path).relative_to(root).as_posix() if root else str(path)
    except ValueError:
        return str(path)


def _paired_arrays(
    common: list[str], human: dict[str, dict], predicted: dict[str, dict], class_names: tuple
) -> PairedAnswers:
    """Line up the human's answers and every run's predictions on the common images."""
    code = {name: i for i, name in enumerate(class_names)}
    runs = tuple(sorted(predicted[common[0]]))
    mismatched = [key for key in common if human[key]["true"] != predicted[key][runs[0]]["true"]]
    if mismatched:
        raise ValueError(
            f"{len(mismatched)} paired image(s) have another true class in the "
            f"scored folder than in the test set (e.g. {mismatched[0]}); "
            "the scorer scored a different folder"
        )
    unknown = sorted({human[key]["answer"] for key in common} - set(code))
    if unknown:
        raise ValueError(
            f"the scorer answered {', '.join(unknown)}, not a class of the network "
            f"({', '.join(class_names)})"
        )
    missing = [
        f"p_{name}" for name in class_names if f"p_{name}" not in predicted[common[0]][runs[0]]
    ]
    if missing:
        raise ValueError(f"predictions.csv lacks the probability columns {', '.join(missing)}")
    rows = [[predicted[key][run] for key in common] for run in runs]  # (R, N) of dicts
    return PairedAnswers(
        images=tuple(common),
        class_names=tuple(class_names),
        runs=runs,
        truth=np.array([code[human[key]["true"]] for key in common], dtype=np.int64),
        human=np.array([code[human[key]["answer"]] for key in common], dtype=np.int64),
        predicted=np.array(
            [[code[row["predicted"]] for row in run] for run in rows], dtype=np.int64
        ),
        probs=np.array(
            [[[float(row[f"p_{name}"]) for name in class_names] for row in run] for run in rows]
        ),
    )


def _json_safe(value):
    """NaN -> None (JSON has no NaN), recursively through dicts and lists."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_comparison(run_dir: str | Path, comparison: dict) -> Path:
    """Save a `compare_human` result and mark the expert's accuracy in config.json.

    Writes ``run_dir/compare-<test>-<scorer>.json`` and sets ``config["expert"][test]`` to
    the human accuracy on the paired images (both atomically; other config keys are kept),
    which the box plot of the report draws. Returns the JSON file's path.
    """
    run_dir = Path(run_dir)
    path = run_dir / f"compare-{results.file_slug(comparison['test'], comparison['scorer'])}.json"
    results.write_json(path, _json_safe(comparison))
    _read_config(run_dir)  # a clear error when it is not a results folder
    results.update_config(
        run_dir, {"expert": {comparison["test"]: comparison["human"]["accuracy"]}}
    )
    return path


def _pct(value) -> str:
    return "–" if value is None or value != value else f"{value:.1%}"


def format_comparison(comparison: dict) -> str:
    """A readable summary of `compare_human` for the terminal."""
    c, runs, ens = comparison, comparison["runs"], comparison["ensemble"]
    human, test, diff = c["human"], c["mcnemar"], c["difference"]
    kappa = c["kappa"]["human_vs_ensemble"]
    runs_label = f"network runs ({runs['n']})"
    lines = [
        f"{c['scorer']} vs {c['model']} on test set {c['test']}: {c['n_images']} paired images",
        f"  human accuracy      {_pct(human['accuracy'])}  (95 % CI {_pct(human['ci_low'])} to "
        f"{_pct(human['ci_high'])}; {human['n_correct']}/{c['n_images']})",
        f"  {runs_label:<20}mean {_pct(runs['mean'])}, "
        f"min {_pct(runs['min'])}, "
        f"max {_pct(runs['max'])}; the human beats {runs['n_below_human']}, ties "
        f"{runs['n_equal_human']}, trails {runs['n_above_human']}",
        f"  ensemble            {_pct(ens['accuracy'])} (mean probability; majority vote "
        f"{_pct(ens['majority_vote_accuracy'])})",
        f"  McNemar exact       p = {test['p_value']:.3g} (only the human right: "
        f"{test['human_right_ensemble_wrong']}, only the ensemble right: "
        f"{test['human_wrong_ensemble_right']})",
        f"  Cohen's kappa       {'–' if kappa is None or kappa != kappa else f'{kappa:.2f}'} "
        "(human vs ensemble)",
        f"  human - ensemble    {diff['difference']:+.1%} (95 % bootstrap CI "
        f"{diff['ci_low']:+.1%} to {diff['ci_high']:+.1%})",
    ]
    lines += _disagreement_lines(c["disagreements"])
    for key, label in (
        ("scored_not_predicted", "scored but not predicted"),
        ("predicted_not_scored", "predicted but not scored"),
        ("predicted_by_some_runs_only", "predicted by some runs only"),
    ):
        if c["unmatched"][key]:
            lines.append(
                f"  not compared, {label} ({len(c['unmatched'][key])}): "
                + ", ".join(c["unmatched"][key][:5])
                + (" ..." if len(c["unmatched"][key]) > 5 else "")
            )
    return "\n".join(lines)


def _disagreement_lines(disagreements: list[dict], limit: int = 20) -> list[str]:
    if not disagreements:
        return ["  human and ensemble agree on every image"]
    lines = [f"  disagreements ({len(disagreements)}):  true / human / ensemble (probability)"]
    for row in disagreements[:limit]:
        lines.append(
            f"    {row['image']}: {row['true']} / {row['human']} / {row['ensemble']} "
            f"({row['ensemble_probability']:.0%})"
        )
    if len(disagreements) > limit:
        lines.append(f"    ... and {len(disagreements) - limit} more (see the JSON file)")
    return lines
