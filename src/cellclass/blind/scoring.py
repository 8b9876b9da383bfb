"""What the scorers did: tidy answer tables and per-scorer accuracy, per class and self-consistency.

Accuracy counts each image once, by its first showing; the repeated showings (``--repeats``)
only measure self-consistency: the share of repeated images given the same answer both times.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass.blind.store import ScoreStore, Session
from cellclass.metrics import confusion_matrix, wilson_interval

ANSWER_COLUMNS = [
    "scorer",
    "path",
    "true",
    "answer",
    "correct",
    "response_ms",
    "answered_at",
    "is_repeat",
    "position",
]


def answer_rows(store: ScoreStore, *, scorer: str | None = None) -> list[dict]:
    """One tidy row per standing answer (columns `ANSWER_COLUMNS`), by scorer then position."""
    return [
        {
            "scorer": record.item.scorer,
            "path": record.item.path,
            "true": record.item.true_label,
            "answer": record.answer,
            "correct": int(record.answer == record.item.true_label),
            "response_ms": record.response_ms if record.response_ms is not None else "",
            "answered_at": record.answered_at,
            "is_repeat": int(record.item.is_repeat),
            "position": record.item.position,
        }
        for record in store.answer_records(scorer)
    ]


def write_answers_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write `answer_rows` output as a CSV (atomically); returns the path."""
    path = Path(path)
    results.write_table(path, ANSWER_COLUMNS, rows)
    return path


def scorer_summary(session: Session, total: int, rows: list[dict]) -> dict:
    """Accuracy of one scorer with a 95 % Wilson interval, per class, and self-consistency.

    Parameters
    ----------
    session : Session
        The scorer's session (class names).
    total : int
        Showings in the scorer's order, to report completeness.
    rows : list of dict
        This scorer's `answer_rows`.

    Returns
    -------
    dict
        ``scorer``, ``answered``, ``total``, ``n_images`` (first showings answered),
        ``n_correct``, ``accuracy``, ``ci_low``, ``ci_high`` (NaN without answers),
        ``per_class`` {class: {n, n_correct, accuracy}}, ``confusion`` (K x K nested lists,
        rows true, columns answer), ``self_consistency`` {n_pairs, n_same, rate},
        ``median_response_ms``.
    """
    first = [row for row in rows if not row["is_repeat"]]
    n_correct = sum(row["correct"] for row in first)
    low, high = wilson_interval(n_correct, len(first)) if first else (float("nan"),) * 2
    summary = {
        "scorer": session.scorer,
        "answered": len(rows),
        "total": total,
        "n_images": len(first),
        "n_correct": n_correct,
        "accuracy": n_correct / len(first) if first else float("nan"),
        "ci_low": low,
        "ci_high": high,
    }
    summary["per_class"] = _per_class(first, session.class_names)
    summary["confusion"] = _confusion(first, session.class_names)
    summary["self_consistency"] = _self_consistency(rows)
    times = [row["response_ms"] for row in rows if row["response_ms"] != ""]
    summary["median_response_ms"] = statistics.median(times) if times else float("nan")
    return summary


def _per_class(first: list[dict], class_names: tuple[str, ...]) -> dict[str, dict]:
    per_class = {}
    for name in class_names:
        hits = [row["correct"] for row in first if row["true"] == name]
        accuracy = sum(hits) / len(hits) if hits else float("nan")
        per_class[name] = {"n": len(hits), "n_correct": sum(hits), "accuracy": accuracy}
    return per_class


def _confusion(first: list[dict], class_names: tuple[str, ...]) -> list[list[int]]:
    if not first:
        return [[0] * len(class_names) for _ in class_names]
    code = {name: i for i, name in enumerate(class_names)}
    true = np.array([code[row["true"]] for row in first])
    answer = np.array([code[row["answer"]] for row in first])
    return confusion_matrix(true, answer, len(class_names)).tolist()


def _self_consistency(rows: list[dict]) -> dict:
    """Share of repeated images answered the same way on both showings."""
    first = {row["path"]: row["answer"] for row in rows if not row["is_repeat"]}
    pairs = [
        (first[row["path"]], row["answer"])
        for row in rows
        if row["is_repeat"] and row["path"] in first
    ]
    n_same = sum(a == b for a, b in pairs)
    return {
        "n_pairs": len(pairs),
        "n_same": n_same,
        "rate": n_same / len(pairs) if pairs else float("nan"),
    }


def summarize_scores(store: ScoreStore) -> list[dict]:
    """`scorer_summary` of every scorer in the store, by name."""
    rows = answer_rows(store)
    summaries = []
    for session in store.sessions():
        mine = [row for row in rows if row["scorer"] == session.scorer]
        total = store.progress(session.scorer).total
        summaries.append(scorer_summary(session, total, mine))
    return summaries


def _percent(value: float) -> str:
    return "–" if value != value else f"{value:.1%}"


def format_scores(summaries: list[dict]) -> str:
    """A readable table of `summarize_scores` for the terminal."""
    if not summaries:
        return "no scorers in this database yet"
    lines = [
        f"{'scorer':<16}{'answered':>10}{'accuracy':>10}  {'95 % CI':<15}"
        f"{'self-consistency':>18}{'median time':>13}"
    ]
    for s in summaries:
        ci = f"{_percent(s['ci_low'])}–{_percent(s['ci_high'])}" if s["n_images"] else "–"
        pairs = s["self_consistency"]
        consistency = f"{_percent(pairs['rate'])} ({pairs['n_same']}/{pairs['n_pairs']})"
        seconds = s["median_response_ms"] / 1000
        time = "–" if seconds != seconds else f"{seconds:.1f} s"
        lines.append(
            f"{s['scorer']:<16}{str(s['answered']) + '/' + str(s['total']):>10}"
            f"{_percent(s['accuracy']):>10}  {ci:<15}{consistency:>18}{time:>13}"
        )
        per_class = ", ".join(
            f"{name} {_percent(c['accuracy'])} ({c['n_correct']}/{c['n']})"
            for name, c in s["per_class"].items()
        )
        lines.append(f"{'':<4}per class: {per_class}")
    return "\n".join(lines)
