"""Property tests (hypothesis) where the property is the specification: metrics against the
field's libraries, grouped splits, the two normalisation paths, and the results tables' round
trip. Examples are few and small so the suite stays fast on 2 cores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion

from cellclass import results
from cellclass.data.folders import grouped_split
from cellclass.data.normalization import (
    Normalization,
    image_percentiles,
    normalize,
    normalize_batch,
)
from cellclass.metrics import accuracy, cohen_kappa, confusion_matrix, wilson_interval

FAST = settings(max_examples=40, deadline=None)


@st.composite
def label_pairs(draw, max_classes: int = 4):
    k = draw(st.integers(2, max_classes))
    n = draw(st.integers(1, 40))
    labels = st.lists(st.integers(0, k - 1), min_size=n, max_size=n)
    return k, np.array(draw(labels)), np.array(draw(labels))


@FAST
@given(label_pairs())
def test_accuracy_and_confusion_agree_with_sklearn_and_ignore_order(pair):
    k, truth, predicted = pair
    counts = confusion_matrix(truth, predicted, k)
    np.testing.assert_array_equal(counts, sk_confusion(truth, predicted, labels=list(range(k))))
    assert accuracy(truth, predicted) == pytest.approx(np.trace(counts) / len(truth))
    order = np.random.default_rng(len(truth)).permutation(len(truth))
    assert accuracy(truth[order], predicted[order]) == accuracy(truth, predicted)


@FAST
@given(label_pairs())
def test_cohen_kappa_agrees_with_sklearn(pair):
    k, a, b = pair
    ours = cohen_kappa(a, b, k)
    if len(set(a) | set(b)) == 1:  # chance agreement 1: undefined
        assert math.isnan(ours)
        return
    assert ours == pytest.approx(cohen_kappa_score(a, b, labels=list(range(k))), abs=1e-9)


@FAST
@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_is_scipys_and_holds_the_estimate(kn):
    k, n = kn
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    reference = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((reference.low, reference.high), abs=1e-9)


@st.composite
def grouped_samples(draw):
    n_groups = draw(st.integers(4, 20))
    sizes = draw(st.lists(st.integers(1, 6), min_size=n_groups, max_size=n_groups))
    classes = draw(st.lists(st.integers(0, 1), min_size=n_groups, max_size=n_groups))
    groups, labels = [], []
    for g, (size, label) in enumerate(zip(sizes, classes, strict=True)):
        groups += [f"field{g}"] * size
        labels += [label] * size
    return groups, np.array(labels), draw(st.sampled_from([0.2, 0.3, 0.5]))


@FAST
@given(grouped_samples(), st.integers(0, 2**16))
def test_grouped_split_keeps_groups_whole_and_every_class_trained(sample, seed):
    groups, labels, fraction = sample
    train, held = grouped_split(groups, labels, fraction, rng=np.random.default_rng(seed))
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(len(groups)))
    train_groups = {groups[i] for i in train}
    assert not train_groups & {groups[i] for i in held}  # no field on both sides
    for label in np.unique(labels):  # a class is never held out entirely
        assert (labels[train] == label).any()


SHAPES = st.tuples(st.integers(1, 3), st.integers(2, 6), st.integers(2, 6), st.just(2))


@FAST
@given(arrays(np.uint16, SHAPES), st.sampled_from(["dataset", "bitdepth"]))
def test_numpy_and_torch_normalisation_give_the_same_numbers_in_0_1(images, mode):
    if mode == "bitdepth":
        norm = Normalization("bitdepth", low=(0.0, 0.0), high=(65535.0, 65535.0))
    else:
        low, high = np.percentile(images, [0.5, 99.5], axis=(0, 1, 2))
        norm = Normalization("dataset", low=tuple(map(float, low)), high=tuple(map(float, high)))
    ours = normalize(images, norm)
    batch = normalize_batch(torch.from_numpy(images.astype(np.int32)).permute(0, 3, 1, 2), norm)
    np.testing.assert_allclose(batch.permute(0, 2, 3, 1).numpy(), ours, atol=1e-6)
    assert ours.min() >= 0.0 and ours.max() <= 1.0


TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=12
)  # class and file names from other people's folders: formulas, digits, unicode, empty


@FAST
@given(st.lists(st.tuples(TEXT, TEXT, st.floats(0, 1) | st.just(math.nan)), min_size=1, max_size=8))
def test_results_tables_read_back_what_was_written(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("table") / "predictions.csv"
    written = [
        {"run": k, "true": a, "predicted": b, "confidence": c} for k, (a, b, c) in enumerate(rows)
    ]
    results.write_table(path, ["run", "true", "predicted", "confidence"], written)
    back = results.read_table(path)
    assert [(r["run"], r["true"], r["predicted"]) for r in back] == [
        (r["run"], r["true"], r["predicted"]) for r in written
    ]
    for r, w in zip(back, written, strict=True):  # numbers keep 6 significant digits
        assert (math.isnan(r["confidence"]) and math.isnan(w["confidence"])) or r[
            "confidence"
        ] == pytest.approx(w["confidence"], rel=1e-5, abs=1e-12)


@st.composite
def fields_of_classes(draw):
    """Fields (groups) of 1-6 images, each field of one class, 1-3 classes."""
    n_classes = draw(st.integers(1, 3))
    groups, labels = [], []
    for field in range(draw(st.integers(2, 24))):
        label, size = draw(st.integers(0, n_classes - 1)), draw(st.integers(1, 6))
        groups += [f"field{field}"] * size
        labels += [label] * size
    return groups, np.array(labels)


@FAST
@given(fields_of_classes(), st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.8]), st.integers(0, 2**16))
def test_grouped_split_holds_out_the_fraction_of_each_class_within_one_field(
    sample, fraction, seed
):
    """Per class: the held-out images are within one field (the class's largest) of
    fraction x the class's images, and above 1.5 x that only when one field alone is held
    out; a class of two or more fields has images on both sides; the same seed gives the
    same split."""
    groups, labels = sample
    train, held = grouped_split(groups, labels, fraction, rng=np.random.default_rng(seed))
    again = grouped_split(groups, labels, fraction, rng=np.random.default_rng(seed))
    assert np.array_equal(train, again[0]) and np.array_equal(held, again[1])
    sizes = {g: groups.count(g) for g in groups}
    for label in np.unique(labels):
        fields = {g for g, y in zip(groups, labels, strict=True) if y == label}
        largest, n_class = max(sizes[g] for g in fields), int(np.sum(labels == label))
        n_held = int(np.sum(labels[held] == label))
        assert fraction * n_class - largest < n_held < fraction * n_class + largest
        held_fields = {groups[i] for i in held if labels[i] == label}
        assert n_held <= 1.5 * fraction * n_class or len(held_fields) == 1
        if len(fields) >= 2:
            assert 0 < n_held < n_class
        else:
            assert n_held == 0  # a one-field class stays in training


@FAST
@given(
    arrays(np.uint16, SHAPES, elements=st.integers(0, 4000)),
    st.integers(1, 5),
    st.integers(0, 1000),
)
def test_image_normalisation_is_per_image_the_same_in_numpy_and_torch(images, scale, shift):
    """ "image" mode: each image stretched to its own percentiles, so an image gives the same
    numbers alone or in a batch, and after a change of exposure (x * scale + shift); the torch
    path, fed the same percentiles, gives the numpy path's numbers."""
    norm = Normalization("image")
    ours = normalize(images, norm)
    assert ours.dtype == np.float32 and ours.min() >= 0.0 and ours.max() <= 1.0
    np.testing.assert_allclose(normalize(images[-1], norm), ours[-1], atol=1e-6)
    brighter = images.astype(np.int64) * scale + shift
    np.testing.assert_allclose(normalize(brighter, norm), ours, atol=1e-4)
    low, high = image_percentiles(images)
    pixels = torch.from_numpy(images.astype(np.int32)).permute(0, 3, 1, 2)
    batch = normalize_batch(pixels, norm, low=torch.from_numpy(low), high=torch.from_numpy(high))
    np.testing.assert_allclose(batch.permute(0, 2, 3, 1).numpy(), ours, atol=1e-6)


@FAST
@given(
    st.sampled_from([np.uint8, np.uint16]).flatmap(
        lambda dtype: arrays(dtype, SHAPES, elements=st.integers(0, np.iinfo(dtype).max))
    ),
    st.tuples(st.floats(0, 100), st.floats(0, 100)).filter(lambda pair: pair[0] < pair[1]),
)
def test_integer_image_percentiles_equal_numpys(images, percentiles):
    """uint8/uint16 percentiles are read off histograms: the same values as np.percentile's
    linear interpolation, for any percentiles and any pixels (ties, one pixel, full range)."""
    low, high = image_percentiles(images, percentiles)
    flat = images.reshape(images.shape[0], -1, images.shape[3])
    expected = np.percentile(flat, percentiles, axis=1).astype(np.float32)
    np.testing.assert_allclose(np.stack([low, high]), expected, rtol=1e-6)


@FAST
@given(
    arrays(np.float32, (2, 3, 3, 1), elements=st.floats(-10, 300, width=32)),
    st.integers(0, 1600).map(lambda eighths: eighths / 8),  # ranges of pixel values
    st.integers(-400, 2000).map(lambda eighths: eighths / 8),
)
def test_a_fixed_range_maps_low_to_0_high_to_1_and_keeps_order(images, low, high):
    """(x - low) / (high - low) clipped to [0, 1], in both paths; an empty or reversed range
    (high <= low) becomes low .. low + 1 in both."""
    norm = Normalization("dataset", low=(low,), high=(high,))
    ours = normalize(images, norm)
    top = high if high > low else low + 1
    expected = np.clip((images.astype(np.float64) - low) / (top - low), 0, 1)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    order = np.argsort(images.ravel(), kind="stable")
    assert np.all(np.diff(ours.ravel()[order]) >= 0)  # brighter never maps darker
    batch = normalize_batch(torch.from_numpy(images).permute(0, 3, 1, 2), norm)
    np.testing.assert_allclose(batch.permute(0, 2, 3, 1).numpy(), ours, atol=1e-6)


NAMES = st.sampled_from(["01", "=1+2", "-5", "'-5", "''", "\r", "\t5", "a\nb", "", "nan", "é→😀"])
FOLDER_NAMES = NAMES | st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"), max_size=8
)  # anything a folder may be called, control characters included


@FAST
@given(
    st.lists(FOLDER_NAMES, min_size=2, max_size=4, unique=True),
    st.lists(st.floats(0, 1) | st.just(math.nan), min_size=4, max_size=4),
)
def test_predictions_table_reads_back_any_class_names_and_their_columns(
    tmp_path_factory, class_names, probabilities
):
    """predictions.csv's p_<class> columns are named after the class folders: whatever they
    are called, the header reads back as written and each column keeps its numbers."""
    path = tmp_path_factory.mktemp("table") / "predictions.csv"
    columns = ["run", "path", "true", "predicted"] + [f"p_{c}" for c in class_names]
    rows = []
    for run, name in enumerate(class_names):
        cells = {f"p_{c}": p for c, p in zip(class_names, probabilities, strict=False)}
        rows.append({"run": run, "path": f"{name}/{name}.png", "true": name, "predicted": name})
        rows[-1].update(cells)
    results.write_table(path, columns, rows)
    back = results.read_table(path)
    assert [list(row) for row in back] == [columns] * len(rows)
    for row, written in zip(back, rows, strict=True):
        assert [row[c] for c in columns[:4]] == [written[c] for c in columns[:4]]
        for column in columns[4:]:
            value, expected = row[column], written[column]
            assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(
                expected, rel=1e-5, abs=1e-12
            )


@FAST
@given(label_pairs(), st.randoms(use_true_random=False))
def test_confusion_and_kappa_ignore_image_order_rater_order_and_class_names(pair, random):
    """Shuffling the images changes no count; swapping the raters transposes the confusion
    matrix and keeps kappa; renaming the classes (the same permutation for both) permutes the
    matrix's rows and columns and keeps kappa."""
    k, a, b = pair
    order = np.array(random.sample(range(len(a)), len(a)))
    rename = np.array(random.sample(range(k), k))  # class i is called rename[i]
    counts = confusion_matrix(a, b, k)
    np.testing.assert_array_equal(confusion_matrix(a[order], b[order], k), counts)
    np.testing.assert_array_equal(confusion_matrix(b, a, k), counts.T)
    renamed = np.zeros_like(counts)
    renamed[np.ix_(rename, rename)] = counts
    np.testing.assert_array_equal(confusion_matrix(rename[a], rename[b], k), renamed)
    kappa = cohen_kappa(a, b, k)
    for other in (cohen_kappa(a[order], b[order], k), cohen_kappa(b, a, k)):
        assert other == pytest.approx(kappa, abs=1e-12, nan_ok=True)
    assert cohen_kappa(rename[a], rename[b], k) == pytest.approx(kappa, abs=1e-12, nan_ok=True)
