"""Score a predictions file with the official KorQuAD v1.0 metric, optionally with error analysis.

    python eval.py DATASET PREDICTIONS [--analyze] [--f1_threshold 0.85] [--model FOLDER] [--out DIR]

The last line on stdout is the result JSON {"exact_match", "f1", "total", "missing"}.
Python API (the seed's): `from eval import evaluate_result, analyze_result`. Docs: docs/eval.md.
"""

from __future__ import annotations

from mrc.analysis import EvalConfig, analyze_result, evaluate_result, run
from mrc.config import parse_config
from mrc.errors import cli_entry

__all__ = ["analyze_result", "evaluate_result", "main"]


@cli_entry
def main(argv: list[str] | None = None) -> None:
    run(parse_config(EvalConfig, argv, description="Official KorQuAD v1.0 EM/F1 of a predictions file."))


if __name__ == "__main__":
    main()
