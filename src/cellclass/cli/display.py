"""What the ``cellclass`` command shows while it works: progress bars and summary tables."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from cellclass.cli.errors import for_terminal


class ProgressObserver:
    """Prints experiment progress with tqdm bars (or plain lines when quiet)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.run_label = ""

    def message(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(for_terminal(text), file=sys.stderr)

    def decoding(self, name: str, total: int):
        if self.quiet:
            return None
        bar = tqdm(total=total, desc=f"decoding {name}", unit="img", leave=False)
        return lambda n: (bar.update(n), bar.n >= total and bar.close())

    def run_started(self, name: str, n_images: int) -> None:
        self.run_label = name
        self.started = time.perf_counter()
        if not self.quiet:
            self.bar = tqdm(total=n_images, desc=self.run_label, unit="img", leave=False)

    def batch(self, n_images: int) -> None:
        if self.bar is not None:
            self.bar.update(n_images)

    def epoch_finished(self, run: int, records) -> None:
        if self.bar is not None:
            parts = [f"{r.split} {r.accuracy:.0%}" for r in records]
            self.bar.set_description(f"{self.run_label} epoch {records[0].epoch}")
            self.bar.set_postfix_str(" ".join(parts))

    def run_finished(self, run: int, rows) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        tests = " ".join(f"{r['dataset']} {r['accuracy']:.1%}" for r in rows)
        seconds = time.perf_counter() - self.started
        print(
            f"{self.run_label} done in {seconds:.0f} s: {tests or 'no test sets'}", file=sys.stderr
        )


def progress_bar(description: str, quiet: bool):
    """A ``progress(done, total)`` callback drawing one tqdm bar per counting (None if quiet)."""
    if quiet:
        return None
    bars = []

    def update(done: int, total: int) -> None:
        if done == 1 or not bars:
            bars.append(tqdm(total=total, desc=description, unit="img", leave=False))
        bars[-1].update(done - bars[-1].n)
        if done >= total:
            bars[-1].close()

    return update


def print_summary(table: list[dict]) -> None:
    if not table:
        print("no test sets: see epochs.csv for training and validation metrics")
        return
    header = (
        f"{'model':<28}{'test set':<16}{'runs':>5}{'mean':>8}{'sd':>8}{'min':>8}{'max':>8}"
        f"{'chance':>8}"
    )
    print("\n" + header + ("  p vs control" if any("p_vs_control" in r for r in table) else ""))
    for row in table:
        sd = "" if row["sd"] != row["sd"] else f"{row['sd']:.1%}"
        chance = f"{row['chance']:.1%}" if "chance" in row else ""
        line = (
            f"{row['model']:<28}{row['dataset']:<16}{row['n']:>5}{row['mean']:>8.1%}{sd:>8}"
            f"{row['min']:>8.1%}{row['max']:>8.1%}{chance:>8}"
        )
        if "p_vs_control" in row:
            line += f"  {row['p_vs_control']:.3f}"
        print(line)
    for line in collapse_lines(table):
        print(line)


def collapse_lines(table: list[dict]) -> list[str]:
    """ "badger: 2 of 12 runs never left chance ..." once per model with collapsed runs."""
    seen: dict[str, dict] = {}
    for row in table:
        if row.get("collapsed") and row["model"] not in seen:
            seen[row["model"]] = row
    return [
        f"{model}: {row['collapsed']} of {row['n']} runs never left chance (constant output on "
        "their training images); they count in the mean"
        for model, row in seen.items()
    ]
