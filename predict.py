"""Predict answers for KorQuAD/SQuAD, KLUE MRC or JSON Lines files, or for one question.

    python predict.py --model FOLDER --input dev.json --output out/
    python predict.py --model FOLDER --question "..." --context "..."
    torchrun --nproc_per_node 2 predict.py --model FOLDER --input dev.json --output out/

Flags and output formats: docs/predict.md.
"""

from __future__ import annotations

from mrc.config import parse_config
from mrc.errors import cli_entry
from mrc.predict import PredictConfig, run


@cli_entry
def main(argv: list[str] | None = None) -> None:
    run(parse_config(PredictConfig, argv, description="Extractive QA predictions from a trained model folder."))


if __name__ == "__main__":
    main()
