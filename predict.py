"""Predict answers for KorQuAD/SQuAD, KLUE MRC or JSON Lines files, or for one question.

    python predict.py --model FOLDER --input dev.json --output out/
    python predict.py --model FOLDER --question "..." --context "..."
    torchrun --nproc_per_node 2 predict.py --model FOLDER --input dev.json --output out/

Window and decode settings not given as flags come from the model folder's training_args.json.
Flags and output formats: docs/predict.md.
"""

from __future__ import annotations

from mrc.config import given_flags, parse_config
from mrc.errors import cli_entry
from mrc.predict import PredictConfig, run

DESCRIPTION = "Extractive QA predictions from a trained model folder."


@cli_entry
def main(argv: list[str] | None = None) -> None:
    run(parse_config(PredictConfig, argv, description=DESCRIPTION), given=given_flags(PredictConfig, argv))


if __name__ == "__main__":
    main()
