"""The one writer of prediction files: `{id: answer}` and the n-best, as the seed wrote them.

Training-time evaluation, predict.py and the logits ensemble all write through `write_predictions`.
It streams: each prediction is written as it comes, so a huge input never holds all its n-best
lists in memory, and the text is exactly `json.dumps(whole_object, ensure_ascii=False, indent=2)`.
Both files are written under temporary names and renamed only when complete.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from mrc.decode import Prediction
from mrc.io import atomic_path

NBEST_FILE_KEYS = ("text", "probability", "start_logit", "end_logit")     # the seed's nbest_predictions.json


@dataclass(frozen=True)
class PredictionFiles:
    """Where one set of predictions goes."""

    predictions: Path   # {"<id>": "<answer>"}: what the official KorQuAD script reads
    nbest: Path         # {"<id>": [{text, probability, start_logit, end_logit}, ...]}

    @property
    def paths(self) -> tuple[Path, Path]:
        return self.predictions, self.nbest


class JsonObjectStream:
    """Writes a JSON object key by key: the same text `json.dumps(obj, indent=2)` gives for the whole."""

    def __init__(self, fh: IO[str]):
        self.fh = fh
        self.count = 0

    def add(self, key: str, value) -> None:
        # json.dumps of a one-key object, minus its braces: the member exactly as it appears nested.
        member = json.dumps({key: value}, ensure_ascii=False, indent=2)[2:-2]
        self.fh.write(("{\n" if self.count == 0 else ",\n") + member)
        self.count += 1

    def close(self) -> None:
        self.fh.write("\n}\n" if self.count else "{}\n")


@contextlib.contextmanager
def _streams(files: PredictionFiles, overwrite: bool) -> Iterator[tuple[JsonObjectStream, JsonObjectStream]]:
    with atomic_path(files.predictions, overwrite=overwrite) as pred_tmp, \
            atomic_path(files.nbest, overwrite=overwrite) as nbest_tmp, \
            open(pred_tmp, "w", encoding="utf-8") as pred_fh, open(nbest_tmp, "w", encoding="utf-8") as nbest_fh:
        predictions, nbest = JsonObjectStream(pred_fh), JsonObjectStream(nbest_fh)
        yield predictions, nbest
        predictions.close()
        nbest.close()


def write_predictions(predictions: Iterable[Prediction], files: PredictionFiles, *, overwrite: bool) -> dict[str, str]:
    """Write every prediction of the iterable (in its order) to both files; returns id -> answer."""
    answers: dict[str, str] = {}
    with _streams(files, overwrite) as (answer_stream, nbest_stream):
        for p in predictions:
            answer_stream.add(p.example_id, p.text)
            nbest_stream.add(p.example_id, [{k: entry[k] for k in NBEST_FILE_KEYS} for entry in p.nbest])
            answers[p.example_id] = p.text
    return answers
