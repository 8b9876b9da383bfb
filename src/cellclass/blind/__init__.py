"""The blinded scoring page, its SQLite store, and the human-versus-network comparison.

``cellclass blind serve`` (`open_server`) lets an expert score the test images blinded;
``cellclass blind results`` (`summarize_scores`, `answer_rows`) reports their accuracy;
``cellclass compare`` (`compare_human`, `write_comparison`) compares them with the network
runs on the same images.
"""

from cellclass.blind.app import create_app
from cellclass.blind.compare import compare_human, format_comparison, write_comparison
from cellclass.blind.paired import PairedAnswers, paired_statistics
from cellclass.blind.scoring import (
    answer_rows,
    format_scores,
    scorer_summary,
    summarize_scores,
    write_answers_csv,
)
from cellclass.blind.server import ServeSettings, open_server, start_server
from cellclass.blind.session import draw_order, ensure_session
from cellclass.blind.store import (
    AccessError,
    BlindError,
    ConflictError,
    InvalidAnswerError,
    NotFoundError,
    ScoreStore,
    StoreFileError,
    open_store,
)
from cellclass.blind.testset import BlindTest, load_test, render_png

__all__ = [
    "AccessError",
    "BlindError",
    "BlindTest",
    "ConflictError",
    "InvalidAnswerError",
    "NotFoundError",
    "PairedAnswers",
    "ScoreStore",
    "ServeSettings",
    "StoreFileError",
    "answer_rows",
    "compare_human",
    "create_app",
    "draw_order",
    "ensure_session",
    "format_comparison",
    "format_scores",
    "load_test",
    "open_server",
    "open_store",
    "paired_statistics",
    "render_png",
    "scorer_summary",
    "start_server",
    "summarize_scores",
    "write_answers_csv",
    "write_comparison",
]
