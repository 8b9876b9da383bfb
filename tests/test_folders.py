import warnings
from pathlib import Path

import numpy as np
import pytest

from cellclass.data.folders import FolderError, grouped_split, scan_folder

from .conftest import make_class_tree, write_png


def test_classes_sorted_and_phantom_files_ignored(tmp_path):
    root = make_class_tree(tmp_path / "d", {"Snap29": 3, "Control": 2})
    (root / ".DS_Store").write_bytes(b"\0junk")
    (root / "Control" / "._Control_000.png").write_bytes(b"\0appledouble")
    (root / "Control" / "Thumbs.db").write_bytes(b"x")
    (root / "__MACOSX" / "Control").mkdir(parents=True)
    (root / ".ipynb_checkpoints").mkdir()
    (root / "Control" / "notes.txt").write_text("hello")
    index = scan_folder(root)
    assert index.class_names == ("Control", "Snap29")
    assert index.class_counts() == {"Control": 2, "Snap29": 3}
    names = {p.name for p in index.ignored}
    assert {
        ".DS_Store",
        "._Control_000.png",
        "Thumbs.db",
        "__MACOSX",
        ".ipynb_checkpoints",
    } <= names
    assert [p.name for p in index.non_images] == ["notes.txt"]
    assert all(not s.path.name.startswith(".") for s in index.samples)


def test_test_folder_mapped_by_name_whatever_the_order(tmp_path):
    train = scan_folder(make_class_tree(tmp_path / "train", {"B": 2, "A": 2, "C": 2}))
    test = scan_folder(
        make_class_tree(tmp_path / "test", {"C": 1, "A": 1}), class_names=train.class_names
    )
    assert test.class_names == ("A", "B", "C")
    by_class = {s.path.parent.name: s.label for s in test.samples}
    assert by_class == {"A": 0, "C": 2}
    assert test.missing_classes == ("B",)


def test_unknown_test_class_is_an_error_naming_it(tmp_path):
    train = scan_folder(make_class_tree(tmp_path / "train", {"A": 2, "B": 2}))
    make_class_tree(tmp_path / "test", {"A": 1, "Zebra": 1})
    with pytest.raises(FolderError, match="'Zebra'"):
        scan_folder(tmp_path / "test", class_names=train.class_names)


@pytest.mark.parametrize("case", ["missing", "empty", "one_class", "empty_class"])
def test_bad_folders_raise_one_line_errors(tmp_path, case):
    root = tmp_path / "d"
    if case == "empty":
        root.mkdir()
    elif case == "one_class":
        make_class_tree(root, {"A": 2})
    elif case == "empty_class":
        make_class_tree(root, {"A": 2})
        (root / "B").mkdir()
        (root / "B" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(FolderError) as info:
        scan_folder(root)
    assert "\n" not in str(info.value)
    assert str(root) in str(info.value)


def test_group_from_manifest_and_regex(tmp_path):
    root = make_class_tree(tmp_path / "d", {"A": 4, "B": 4})
    index = scan_folder(root, group_by=r"^(\w)_00")
    assert len(set(index.groups)) == 2
    lines = ["path,class,source"] + [
        f"{s.path.relative_to(root).as_posix()},x,field{i // 2}"
        for i, s in enumerate(index.samples)
    ]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    index = scan_folder(root)
    assert sorted(set(index.groups)) == [f"field{i}" for i in range(4)]


@pytest.mark.parametrize("seed", range(5))
def test_grouped_split_never_splits_a_group(seed):
    rng = np.random.default_rng(seed)
    groups = [f"g{i // 4}" for i in range(80)]  # 20 fields of 4 tiles
    labels = np.array([0 if i < 40 else 1 for i in range(80)])
    train, held = grouped_split(groups, labels, 0.25, rng=rng)
    assert set(train).isdisjoint(held)
    assert len(train) + len(held) == 80
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in held})
    assert 12 <= len(held) <= 28
    assert set(labels[held]) == {0, 1} and set(labels[train]) == {0, 1}


def test_grouped_split_keeps_a_single_group_class_in_training():
    groups = ["a"] * 5 + ["b", "c", "d", "e"]
    labels = np.array([0] * 5 + [1] * 4)
    train, held = grouped_split(groups, labels, 0.5, rng=np.random.default_rng(0))
    assert set(labels[train]) == {0, 1}


def test_nested_subfolders_are_part_of_the_class(tmp_path):
    root = make_class_tree(tmp_path / "d", {"A": 2, "B": 2})
    write_png(root / "A" / "plate2" / "x.png", np.zeros((8, 8), np.uint8))
    assert scan_folder(root).class_counts()["A"] == 3


def test_paths_are_absolute(tmp_path, monkeypatch):
    make_class_tree(tmp_path / "d", {"A": 1, "B": 1})
    monkeypatch.chdir(tmp_path)
    index = scan_folder("d")
    assert all(Path(p).is_absolute() for p in index.paths)


def test_the_parent_of_train_and_test_folders_is_refused(tmp_path):
    """`cellclass train data/` would otherwise train on the classes train, test-a, test-b."""
    for part in ("train", "test-a"):
        make_class_tree(tmp_path / "data" / part, {"Control": 2, "Treated": 2})
    with pytest.raises(FolderError, match="parent of class-folder trees.*Control, Treated"):
        scan_folder(tmp_path / "data")
    nested = tmp_path / "nested"  # class folders with sub-folders of their own names are fine
    make_class_tree(nested / "Control", {"day1": 2}, offset=0)
    make_class_tree(nested / "Treated", {"day2": 2}, offset=0)
    assert scan_folder(nested).class_names == ("Control", "Treated")


def test_folder_links_back_into_the_tree_are_not_followed(tmp_path):
    """Issue 17, point 2: `A/self -> .` counted A's files 41 times; `A/up -> ..` put class
    B's files under class A. Neither link is followed; both are listed as ignored."""
    root = make_class_tree(tmp_path / "train", {"A": 3, "B": 2})
    (root / "A" / "self").symlink_to(".", target_is_directory=True)
    (root / "A" / "up").symlink_to("..", target_is_directory=True)
    (root / "loop").symlink_to(".", target_is_directory=True)  # a "class" that is the tree
    index = scan_folder(root)
    assert index.class_names == ("A", "B")
    counts = [sum(s.label == k for s in index.samples) for k in range(2)]
    assert counts == [3, 2]
    assert {p.name for p in index.ignored} >= {"self", "up", "loop"}
    elsewhere = make_class_tree(tmp_path / "more", {"extra": 2})
    (root / "B" / "linked").symlink_to(elsewhere / "extra", target_is_directory=True)
    assert sum(s.label == 1 for s in scan_folder(root).samples) == 4  # outside links still count


def test_byte_identical_copies_within_a_folder_are_warned_about(tmp_path):
    """Issue 17, point 2: copies inside the training folder straddle the validation split."""
    import shutil

    from cellclass.data.datasets import load_dataset
    from cellclass.data.preprocessing import Preprocessing
    from cellclass.progress import WarningObserver

    root = make_class_tree(tmp_path / "train", {"A": 3, "B": 2})
    original = sorted((root / "A").iterdir())[0]
    shutil.copy(original, root / "B" / "copy.png")
    prep, cache = Preprocessing(image_size=16), str(tmp_path / "cache")
    with pytest.warns(UserWarning, match=r"1 file\(s\) are byte-identical copies") as caught:
        load_dataset("train", root, prep, cache_dir=cache, observer=WarningObserver())
    assert f"{root / 'B' / 'copy.png'} = {original}" in str(caught[0].message)
    (root / "B" / "copy.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no copies: no warning
        load_dataset("train", root, prep, cache_dir=cache, observer=WarningObserver())


def test_class_folders_with_images_and_same_named_subfolders_are_classes(tmp_path):
    """Plates in sub-folders of the same names under each class (A/plate1, B/plate1) make
    a nested class tree, not the parent of several trees, when the class folders also hold
    images of their own: a loose image file, or an OME-Zarr folder (one image)."""
    root = make_class_tree(tmp_path / "d", {"A": 1, "B": 1})
    for name in ("A", "B"):
        write_png(root / name / "plate1" / f"{name}_p.png", np.zeros((8, 8), np.uint8))
    assert scan_folder(root).class_counts() == {"A": 2, "B": 2}
    zarr = tmp_path / "z"
    for name in ("A", "B"):
        (zarr / name / f"{name}.ome.zarr").mkdir(parents=True)
        write_png(zarr / name / "plate1" / f"{name}_p.png", np.zeros((8, 8), np.uint8))
    assert scan_folder(zarr).class_counts() == {"A": 2, "B": 2}


def test_the_refusal_of_a_parent_folder_suggests_its_first_tree(tmp_path):
    for part in ("train", "test-a"):
        make_class_tree(tmp_path / "data" / part, {"Control": 2, "Treated": 2})
    with pytest.raises(FolderError) as error:
        scan_folder(tmp_path / "data")
    assert str(error.value).endswith(f"pass one of them, e.g. {tmp_path / 'data' / 'test-a'}")


def test_the_manifest_is_neither_an_image_nor_a_stray_file(tmp_path):
    root = make_class_tree(tmp_path / "d", {"A": 2, "B": 2})
    index = scan_folder(root)
    lines = ["path,class,source"] + [
        f"{s.path.relative_to(root).as_posix()},x,one-field" for s in index.samples
    ]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    (root / "notes.txt").write_text("a stray file")
    index = scan_folder(root)
    assert [p.name for p in index.non_images] == ["notes.txt"]
    assert set(index.groups) == {"one-field"}


def test_a_manifest_without_a_path_column_is_refused(tmp_path):
    root = make_class_tree(tmp_path / "d", {"A": 2, "B": 2})
    (root / "manifest.csv").write_text("file,source\nA/A_000.png,f1\n")
    with pytest.raises(FolderError, match="not a cellclass manifest"):
        scan_folder(root)


def test_group_by_without_a_capture_group_takes_the_whole_match(tmp_path):
    root = make_class_tree(tmp_path / "d", {"A": 3, "B": 3})
    index = scan_folder(root, group_by=r"[AB]_00")  # A_000.png, A_001.png ... -> "A_00"
    assert sorted(set(index.groups)) == ["A_00", "B_00"]
    index = scan_folder(root, group_by=r"no such text")  # no match: each file its own group
    assert sorted(set(index.groups)) == sorted(p.name for p in index.paths)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_grouped_split_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match=f"between 0 and 1, got {fraction}"):
        grouped_split(["a", "b"], np.array([0, 1]), fraction, rng=np.random.default_rng(0))


def test_an_index_is_a_record_that_cannot_be_changed(tmp_path):
    """Splits, caches and runs share one FolderIndex: none of them may edit it."""
    import dataclasses

    index = scan_folder(make_class_tree(tmp_path / "d", {"A": 1, "B": 1}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.class_names = ("B", "A")
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.samples[0].label = 1


@pytest.mark.parametrize("seed", range(6))
def test_grouped_split_stops_at_the_fraction_and_skips_a_field_that_would_overshoot(seed):
    """Ten fields of two images per class, fraction 0.2: exactly two fields (4 images) of
    each class held out. One field of 10 among ten single images: held out alone (when drawn
    first) or passed over, so the held-out side stays within 1.5 x the 4 images asked for."""
    rng = np.random.default_rng(seed)
    groups = [f"f{i // 2}" for i in range(40)]
    labels = np.array([0] * 20 + [1] * 20)
    _, held = grouped_split(groups, labels, 0.2, rng=rng)
    assert np.bincount(labels[held]).tolist() == [4, 4]
    groups = ["big"] * 10 + [f"single{i}" for i in range(10)]
    _, held = grouped_split(groups, np.zeros(20, int), 0.2, rng=rng)
    held_groups = {groups[i] for i in held}
    assert held_groups == {"big"} or ("big" not in held_groups and 4 <= len(held) <= 6)
