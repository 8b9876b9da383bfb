import csv
from dataclasses import replace

import pytest

from cellclass import results
from cellclass.report.build import write_report
from cellclass.summary import model_comparisons, summary_table
from cellclass.training import ExperimentSettings, run_experiment
from cellclass.training.recipes import REFERENCE, STRONG, resolve_recipes, with_overrides

from .conftest import make_class_tree


def test_reference_recipe_is_the_study():
    assert (REFERENCE.model, REFERENCE.epochs, REFERENCE.batch_size) == ("badger", 9, 20)
    assert (REFERENCE.optimizer, REFERENCE.learning_rate, REFERENCE.adam_eps) == (
        "adam",
        1e-3,
        1e-7,
    )
    assert not REFERENCE.augment.active and not REFERENCE.tta and REFERENCE.select == "last"


def test_overrides_change_named_fields_and_reject_unknown_ones():
    recipe = with_overrides(STRONG, {"epochs": "3", "augment.dihedral": "false", "tta": "no"})
    assert recipe.epochs == 3 and not recipe.augment.dihedral and not recipe.tta
    with pytest.raises(ValueError, match="unknown recipe field"):
        with_overrides(STRONG, {"warp_speed": "9"})
    with pytest.raises(ValueError, match="expected a int"):
        with_overrides(STRONG, {"epochs": "many"})


def test_resolve_recipes_targets_one_recipe_by_label():
    recipes = resolve_recipes(["reference", "strong"], ["badger-deep"], ["strong:epochs=4"])
    assert [r.label for r in recipes] == ["reference", "strong", "badger-deep"]
    assert [r.epochs for r in recipes] == [9, 4, 9]
    assert resolve_recipes(["reference"], [], ["reference:epochs=2"])[0].epochs == 2  # issue 20
    with pytest.raises(ValueError, match="no recipe 'nope'"):
        resolve_recipes(["strong"], [], ["nope:epochs=1"])
    with pytest.raises(ValueError, match="choose one of"):
        resolve_recipes(["turbo"], [], [])


def _tiny_experiment(tmp_path, **changes) -> ExperimentSettings:
    """Two-class 32-px train and test folders and 2 quick runs; ``changes`` override."""
    train = make_class_tree(tmp_path / "train", {"Control": 12, "Treated": 12})
    test = make_class_tree(tmp_path / "test", {"Control": 5, "Treated": 5}, seed=7)
    base = ExperimentSettings(
        train_dir=str(train),
        out=str(tmp_path / "out"),
        tests=(("t", str(test)),),
        runs=2,
        image_size=32,
        cache_dir=str(tmp_path / "cache"),
    )
    return replace(base, **changes)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_multi_recipe_experiment_uses_same_seeds_and_splits(tmp_path):
    fast = replace(REFERENCE, epochs=2, batch_size=8)
    strong = replace(STRONG, epochs=2, batch_size=8, warmup_epochs=1)
    settings = _tiny_experiment(tmp_path, recipes=(fast, strong))
    out = run_experiment(settings)
    runs = _rows(out / "runs.csv")
    assert {(r["model"], r["run"], r["seed"]) for r in runs} == {
        (m, k, s) for m in ("reference", "strong") for k, s in (("0", "0"), ("1", "1"))
    }
    config = results.read_json(out / "config.json")
    saved = config["settings"]["recipes"][1]
    assert saved["augment"]["dihedral"] is True and saved["tta"] is True
    assert saved["label_smoothing"] == STRONG.label_smoothing
    # identical validation split for both models of a run: same number of val images
    epochs = _rows(out / "epochs.csv")
    assert {r["model"] for r in epochs} == {"reference", "strong"}
    names = sorted(p.name for p in (out / "models").iterdir())
    assert names == [
        "run-00-reference.pt",
        "run-00-strong.pt",
        "run-01-reference.pt",
        "run-01-strong.pt",
    ]
    a = results.load_checkpoint(out / "models" / "run-00-reference.pt")
    b = results.load_checkpoint(out / "models" / "run-00-strong.pt")
    assert a["seed"] == b["seed"] and b["architecture"] == STRONG.model == "compact-fine"
    assert {row["model"] for row in summary_table(out)} == {"reference", "strong"}
    (comparison,) = model_comparisons(out)
    assert comparison["first"] == "reference" and 0 <= comparison["mcnemar_p"] <= 1
    assert all(0 <= row["ensemble"] <= 1 for row in summary_table(out))


def test_split_is_a_function_of_the_seed_only(tmp_path):
    from cellclass.progress import Observer
    from cellclass.training import prepare_data, run_splits

    train = make_class_tree(tmp_path / "train", {"Control": 12, "Treated": 12})
    settings = ExperimentSettings(
        train_dir=str(train),
        out=str(tmp_path / "o"),
        image_size=32,
        cache_dir=str(tmp_path / "c"),
        recipes=(REFERENCE, STRONG),
    )
    data = prepare_data(settings, Observer()).train
    for seed in range(3):
        one = run_splits(data, settings, seed)
        other = run_splits(data, replace(settings, recipes=(STRONG,)), seed)
        assert all((a == b).all() for a, b in zip(one, other, strict=True))


def test_feature_baseline_runs_on_the_same_splits_and_is_skipped_by_predict(tmp_path):
    from cellclass.predict import predict_paths

    settings = _tiny_experiment(
        tmp_path, baselines=("features",), recipes=(replace(REFERENCE, epochs=1, batch_size=8),)
    )
    out = run_experiment(settings)
    runs = _rows(out / "runs.csv")
    seeds = {
        m: sorted(r["seed"] for r in runs if r["model"] == m) for m in ("reference", "features")
    }
    assert seeds["reference"] == seeds["features"] == ["0", "1"]
    features = [r for r in runs if r["model"] == "features"]
    # the classes differ only in *where* the bright quadrant is: position-invariant features
    # cannot tell them apart, unlike the CNN -- exactly what the baseline is there to reveal
    assert len(features) == 2 and all(0 <= float(r["accuracy"]) <= 1 for r in features)
    assert {row["model"] for row in summary_table(out)} == {"reference", "features"}
    rows = predict_paths(out, [dict(settings.tests)["t"]], cache_dir=str(tmp_path / "cache"))
    assert all(r["n_runs"] == 2 for r in rows)  # the two CNN runs, not the baseline
    run_experiment(settings, resume=True)  # nothing left to do; the baseline counts as finished
    assert len(_rows(out / "runs.csv")) == len(runs)


# ---------------------------------------------------------------- recipe-level normalisation
def test_each_recipe_trains_with_its_own_normalisation_unless_the_user_chooses(tmp_path):
    settings = _tiny_experiment(
        tmp_path,
        runs=1,
        val_split=0.25,
        recipes=(replace(REFERENCE, epochs=1), replace(STRONG, epochs=1, tta=False)),
    )
    out = run_experiment(settings)
    config = results.read_json(out / "config.json")
    modes = {label: norm["mode"] for label, norm in config["normalization"].items()}
    assert modes == {"reference": "bitdepth", "strong": "dataset"}
    assert config["normalization"]["reference"]["high"] == [255.0]  # the study's /255
    assert config["normalization"]["strong"]["high"] != [255.0]  # training percentiles
    assert config["precision"]["reference"] == "fp32"  # the faithful recipe never autocasts
    assert config["precision"]["strong"] in ("fp32", "bf16 autocast (training)")  # by machine
    html = write_report(out).read_text()  # the report states each model's scaling
    assert "<td>reference</td><td>bitdepth</td><td>0</td><td>255</td>" in html
    assert "<td>strong</td><td>dataset</td>" in html
    for label, mode in modes.items():  # what each checkpoint carries for predict/evaluate
        saved = results.load_checkpoint(out / "models" / f"run-00-{label}.pt")
        assert saved["preprocessing"]["normalization"]["mode"] == mode
    forced = run_experiment(replace(settings, out=str(tmp_path / "forced"), normalize="image"))
    config = results.read_json(forced / "config.json")
    assert {n["mode"] for n in config["normalization"].values()} == {"image"}


def test_evaluate_sees_each_run_as_it_was_trained(tmp_path):
    """Re-evaluating the experiment's own test folder gives each recipe's recorded accuracy
    and loss only if every run is fed pixels scaled by its own recipe's normalisation."""
    from cellclass.predict import evaluate_folder

    settings = _tiny_experiment(
        tmp_path,
        runs=1,
        val_split=0.25,
        recipes=(replace(STRONG, epochs=1, tta=False), replace(REFERENCE, epochs=4, batch_size=4)),
    )  # strong first: config.json's one "preprocessing" is strong's, not the reference's
    out = run_experiment(settings)
    before = {r["model"]: r for r in _rows(out / "runs.csv")}
    again = {r["model"]: r for r in evaluate_folder(out, "again", settings.tests[0][1])}
    for model in ("reference", "strong"):
        assert float(again[model]["loss"]) == pytest.approx(float(before[model]["loss"]), rel=1e-4)
        for column in ("seed", "epoch", "collapsed"):  # one row builder for train and evaluate
            assert str(again[model][column]) == before[model][column], column


def test_predict_never_averages_across_recipes(tmp_path, capsys):
    """A folder with two recipes: predict takes the best by validation accuracy, or the one
    named, and uses only that one's runs (issue 20)."""
    from cellclass.cli import main
    from cellclass.predict import predict_paths, validation_scores

    settings = _tiny_experiment(
        tmp_path,
        runs=1,
        val_split=0.25,
        recipes=(replace(REFERENCE, epochs=1), replace(STRONG, epochs=1, tta=False)),
    )
    out = run_experiment(settings)
    images = [dict(settings.tests)["t"]]
    scores = validation_scores(out)
    best = max(scores, key=scores.get)
    assert set(scores) == {"reference", "strong"}
    assert main(["--quiet", "predict", str(out), *images]) == 0
    said = capsys.readouterr().err
    assert f"predicting with 1 run(s) of {best} (best validation accuracy" in said
    rows = predict_paths(out, images, model="strong")
    saved = {r["path"]: r for r in _rows(out / "predictions.csv") if r["model"] == "strong"}
    for row in rows:  # one run of strong: its own probabilities, untouched by the reference
        assert row["n_runs"] == 1
        assert row["p_Treated"] == pytest.approx(float(saved[row["path"]]["p_Treated"]), abs=1e-5)
    assert main(["predict", str(out), *images, "--model", "nope"]) == 2
    assert "no model nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # abbreviations are mistakes, not options
        main(["predict", str(out), *images, "--mod", "strong"])


def test_predict_leaves_collapsed_runs_out_and_says_so(tmp_path):
    from cellclass.predict import choose_runs

    quick = (replace(REFERENCE, epochs=1),)
    out = run_experiment(_tiny_experiment(tmp_path, runs=3, val_split=0.25, recipes=quick))
    rows = results.read_table(out / "runs.csv")
    for row in rows:
        row["collapsed"] = int(row["run"] == 1)  # as if run 1 never left chance
    results.write_table(out / "runs.csv", list(rows[0]), rows)
    runs, note = choose_runs(out)
    assert [saved.run for saved in runs] == [0, 2]
    assert note.endswith("left out 1 collapsed run(s): 1: run 0, 2")
    assert [saved.run for saved in choose_runs(out, run=1)[0]] == [1]  # asked for: kept
    with pytest.raises(ValueError, match="holds runs of 2 models"):  # nothing to choose by
        choose_runs(
            run_experiment(
                _tiny_experiment(
                    tmp_path / "b",
                    runs=1,
                    val_split=0.0,
                    recipes=(
                        replace(REFERENCE, epochs=1),
                        replace(STRONG, epochs=1, tta=False, select="last"),
                    ),
                )
            )
        )
