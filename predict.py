"""Predict answers for KorQuAD/SQuAD, KLUE MRC or JSON Lines files, or for one question.

    python predict.py --model FOLDER --input dev.json --output out/
    python predict.py --model FOLDER --question "..." --context "..."
    torchrun --nproc_per_node 2 predict.py --model FOLDER --input dev.json --output out/

Flags and output formats: docs/predict.md.
"""

from __future__ import annotations

import argparse

from mrc.config import add_dataclass_args, from_args
from mrc.errors import cli_entry
from mrc.predict import PredictConfig, run


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Extractive QA predictions from a trained model folder.")
    add_dataclass_args(parser, PredictConfig)
    run(from_args(PredictConfig, parser.parse_args(argv)))


if __name__ == "__main__":
    main()
