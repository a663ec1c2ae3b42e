"""Score a predictions file with the official KorQuAD v1.0 metric, optionally with error analysis.

    python eval.py DATASET PREDICTIONS [--analyze] [--f1_threshold 0.85] [--model FOLDER] [--out DIR]

With --model, window and decode settings not given as flags come from its training_args.json.

The last line on stdout is the result JSON {"exact_match", "f1", "total", "missing"}.
Python API (the seed's): `from eval import evaluate_result, analyze_result`. Docs: docs/eval.md.
"""

from __future__ import annotations

from mrc.analysis import EvalConfig, analyze_result, evaluate_result, run
from mrc.config import given_flags, parse_config
from mrc.errors import cli_entry

__all__ = ["analyze_result", "evaluate_result", "main"]


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(EvalConfig, argv, description="Official KorQuAD v1.0 EM/F1 of a predictions file.")
    run(cfg, given=given_flags(EvalConfig, argv))


if __name__ == "__main__":
    main()
