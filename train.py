"""Fine-tune an ELECTRA/BERT encoder for extractive QA (KorQuAD): `python train.py --help`.

Takes the flags of the seed's run_korquad.py (HF legacy run_squad.py); see docs/train.md.
Same command for one process and for `torchrun --nproc_per_node N train.py ...`.
"""

from __future__ import annotations

from mrc.config import parse_config
from mrc.errors import cli_entry
from mrc.train import TrainConfig, run


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    return parse_config(TrainConfig, argv, description=__doc__.splitlines()[0])


@cli_entry
def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
