"""Human versus network: paired statistics on hand-made data and `cellclass compare` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cellclass import cli, results
from cellclass.blind.compare import compare_human, format_comparison, write_comparison
from cellclass.blind.paired import PairedAnswers, paired_statistics
from cellclass.blind.session import ensure_session
from cellclass.blind.store import open_store
from cellclass.metrics import wilson_interval

from .test_blind_store import CLASSES, answer_key, write_blind_tree

# Ten images, two classes. The human is wrong on images 4, 8 and 9. Run 0 is wrong on 9,
# run 1 on 0 and 9, run 2 on 7; the mean probability gets every image right, while the
# majority vote misses image 9 (two runs say 0 with p1 = 0.45, one says 1 with p1 = 0.99).
TRUTH = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
HUMAN = [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]
RUNS = [
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 0],
    [1, 0, 0, 0, 0, 1, 1, 1, 1, 0],
    [0, 0, 0, 0, 0, 1, 1, 0, 1, 1],
]
P1 = {(0, 9): 0.45, (1, 0): 0.6, (1, 9): 0.45, (2, 7): 0.4, (2, 9): 0.99}  # else 0.1 or 0.9


def hand_made() -> PairedAnswers:
    p1 = np.array(
        [[P1.get((r, i), 0.9 if RUNS[r][i] else 0.1) for i in range(10)] for r in range(3)]
    )
    return PairedAnswers(
        images=tuple(f"image-{i}" for i in range(10)),
        class_names=("A", "B"),
        runs=(0, 1, 2),
        truth=np.array(TRUTH),
        human=np.array(HUMAN),
        predicted=np.array(RUNS),
        probs=np.stack([1 - p1, p1], axis=-1),
    )


def test_paired_statistics_known_values():
    stats = paired_statistics(hand_made(), rng=np.random.default_rng(0))
    assert stats["n_images"] == 10
    low, high = wilson_interval(7, 10)
    assert stats["human"] == {"n_correct": 7, "accuracy": 0.7, "ci_low": low, "ci_high": high}
    runs = stats["runs"]
    assert runs["accuracies"] == pytest.approx([0.9, 0.8, 0.9])
    assert (runs["mean"], runs["min"], runs["max"]) == pytest.approx((0.8667, 0.8, 0.9), abs=1e-4)
    assert (runs["n_below_human"], runs["n_equal_human"], runs["n_above_human"]) == (0, 0, 3)
    assert runs["human_percentile"] == 0.0
    assert stats["ensemble"]["accuracy"] == 1.0
    assert stats["ensemble"]["majority_vote_accuracy"] == 0.9
    # McNemar: the human is wrong and the ensemble right on 3 images, never the reverse:
    # p = 2 * P(Binom(3, 1/2) <= 0) = 2 / 8.
    assert stats["mcnemar"] == {
        "human_right_ensemble_wrong": 0,
        "human_wrong_ensemble_right": 3,
        "p_value": 0.25,
    }
    # Kappa, human vs ensemble: table [[4, 2], [1, 3]]; p_o = 0.7, p_e = 0.6*0.5 + 0.4*0.5 = 0.5.
    assert stats["kappa"]["human_vs_ensemble"] == pytest.approx(0.4)
    difference = stats["difference"]
    assert difference["difference"] == pytest.approx(-0.3)
    assert difference["ci_low"] <= -0.3 <= difference["ci_high"] <= 0.0
    assert [row["image"] for row in stats["disagreements"]] == ["image-4", "image-8", "image-9"]
    last = stats["disagreements"][-1]
    assert (last["true"], last["human"], last["ensemble"]) == ("B", "A", "B")
    assert last["ensemble_probability"] == pytest.approx(0.63)
    assert last["runs_agreeing"] == pytest.approx(1 / 3)


def test_paired_statistics_is_reproducible_with_a_seed():
    first = paired_statistics(hand_made(), rng=np.random.default_rng(5))
    again = paired_statistics(hand_made(), rng=np.random.default_rng(5))
    assert first["difference"] == again["difference"]


# ---------------------------------------------------------------- a results folder
def make_run_dir(run_dir: Path, key: list[tuple[str, str]], *, root: Path, tested_root: Path):
    """config.json, runs.csv, predictions.csv of 3 real runs and 1 label-shuffled control run.

    Real run r is wrong on image r only; the control run is wrong everywhere. The first image
    is missing from the predictions and a ghost image is predicted but not in the folder.
    """
    config = {
        "class_names": list(CLASSES),
        "tests": {"heldout": {"path": str(tested_root)}},
        "expert": {"older": 0.5},
        "seeds": [0, 1, 2],
    }
    results.write_json(run_dir / "config.json", config)
    images = [(str(tested_root / Path(path).relative_to(root)), label) for path, label in key]
    images = images[1:] + [(str(tested_root / "Knockdown" / "ghost.png"), "Knockdown")]
    run_rows, prediction_rows = [], []
    for run in range(4):
        control = int(run == 3)
        run_rows.append({"run": run, "model": "badger", "dataset": "heldout", "control": control})
        for index, (path, label) in enumerate(images):
            wrong = control or index == run
            predicted = CLASSES[1 - CLASSES.index(label)] if wrong else label
            p = {name: 0.8 if name == predicted else 0.2 for name in CLASSES}
            prediction_rows.append(
                {
                    "run": run,
                    "model": "badger",
                    "dataset": "heldout",
                    "path": path,
                    "true": label,
                    "predicted": predicted,
                    "confidence": 0.8,
                    **{f"p_{n}": v for n, v in p.items()},
                }
            )
    results.write_table(run_dir / "runs.csv", results.RUNS_COLUMNS, run_rows)
    columns = results.prediction_columns(CLASSES)
    results.write_table(run_dir / "predictions.csv", columns, prediction_rows)


@pytest.fixture
def scored(tmp_path: Path):
    """A scored test folder (alice answered all but the last 3 showings) and a run folder."""
    tree = write_blind_tree(tmp_path / "scored-copy")
    key = answer_key(tree)
    store = open_store(tmp_path / "scores.sqlite")
    ensure_session(
        store,
        "alice",
        test_dir=str(tree.resolve()),
        class_names=CLASSES,
        images=key,
        seed=1,
        repeats=0.25,
    )
    items = store.items("alice")
    for n, item in enumerate(items[:-3]):
        answer = item.true_label if n % 4 else CLASSES[1 - CLASSES.index(item.true_label)]
        store.record_answer(item.token, answer, response_ms=700)
    # the network was tested on the same images in another place: paths are matched inside
    make_run_dir(tmp_path / "run", key, root=tree.resolve(), tested_root=tmp_path / "original")
    return tmp_path / "run", store, tree


def test_compare_pairs_by_image_and_reports_the_rest(scored):
    run_dir, store, tree = scored
    comparison = compare_human(run_dir, store.path, "heldout")
    items = store.items("alice")
    answered = {
        i.path: r.answer for r in store.answer_records("alice") for i in [r.item] if not i.is_repeat
    }
    missing = sorted(
        Path(p).relative_to(tree.resolve()).as_posix()
        for p, _ in answer_key(tree)
        if p not in answered
    )
    first_image = Path(answer_key(tree)[0][0]).relative_to(tree.resolve()).as_posix()
    assert comparison["unmatched"]["scored_not_predicted"] == [first_image]
    assert comparison["unmatched"]["predicted_not_scored"] == sorted(
        missing + ["Knockdown/ghost.png"]
    )
    assert comparison["n_images"] == len(answered) - 1
    label = {i.path: i.true_label for i in items}
    n_correct = sum(answered[p] == label[p] for p in answered if not p.endswith(first_image))
    assert comparison["human"]["n_correct"] == n_correct
    assert comparison["runs"]["n"] == 3  # the control run is left out
    assert comparison["runs"]["runs"] == [0, 1, 2]
    assert all(acc > 0.85 for acc in comparison["runs"]["accuracies"])
    assert comparison["ensemble"]["accuracy"] == 1.0  # two of three runs always right
    assert comparison["scorer"] == "alice" and comparison["model"] == "badger"


def test_write_comparison_marks_the_expert_in_config(scored):
    run_dir, store, _ = scored
    comparison = compare_human(run_dir, store.path, "heldout", seed=3)
    path = write_comparison(run_dir, comparison)
    assert path == run_dir / "compare-heldout-alice.json"
    saved = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert saved["human"]["accuracy"] == comparison["human"]["accuracy"]
    config = results.read_json(run_dir / "config.json")
    assert config["expert"] == {"older": 0.5, "heldout": comparison["human"]["accuracy"]}
    assert config["seeds"] == [0, 1, 2] and config["class_names"] == list(CLASSES)
    text = format_comparison(comparison)
    assert "paired images" in text and "McNemar exact" in text and "Knockdown/ghost.png" in text


def test_report_gets_a_human_vs_network_section(scored):
    from cellclass.report.build import write_report

    run_dir, store, _ = scored
    comparison = compare_human(run_dir, store.path, "heldout", seed=3)
    write_comparison(run_dir, comparison)
    html = write_report(run_dir).read_text()
    assert "Human vs network, on the same images" in html
    assert f"p = {comparison['mcnemar']['p_value']:.3g}" in html


def test_compare_command(scored, capsys):
    run_dir, store, _ = scored
    argv = ["compare", str(run_dir), "--human", str(store.path), "--test", "heldout"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "alice vs badger on test set heldout" in out and "Cohen's kappa" in out
    assert "compare-heldout-alice.json" in out
    assert cli.main(argv[:-1] + ["nope"]) == 2
    assert "--test nope" in capsys.readouterr().err
    assert cli.main(argv + ["--scorer", "zed"]) == 2
    assert "--scorer zed: not in" in capsys.readouterr().err


def test_compare_refuses_ambiguous_or_mismatched_input(scored, tmp_path: Path):
    run_dir, store, tree = scored
    ensure_session(
        store, "bob", test_dir=str(tree.resolve()), class_names=CLASSES, images=answer_key(tree)
    )
    with pytest.raises(ValueError, match="several scorers"):
        compare_human(run_dir, store.path, "heldout")
    rows = results.read_table(run_dir / "predictions.csv")
    for row in rows:
        row["true"] = "WildType"
    results.write_table(run_dir / "predictions.csv", list(rows[0]), rows)
    with pytest.raises(ValueError, match="another true class"):
        compare_human(run_dir, store.path, "heldout", scorer="alice")
    with pytest.raises(FileNotFoundError, match="not a cellclass results folder"):
        compare_human(tmp_path, store.path, "heldout", scorer="alice")
