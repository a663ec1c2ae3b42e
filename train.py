"""Fine-tune an ELECTRA/BERT encoder for extractive QA (KorQuAD): `python train.py --help`.

Takes the flags of the seed's run_korquad.py (HF legacy run_squad.py); see docs/train.md.
Same command for one process and for `torchrun --nproc_per_node N train.py ...`.
"""

from __future__ import annotations

import argparse

from mrc.config import add_dataclass_args, from_args
from mrc.errors import cli_entry
from mrc.train import TrainConfig, run


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_args(parser, TrainConfig)
    return from_args(TrainConfig, parser.parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
