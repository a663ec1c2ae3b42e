"""`mrc.Reader`: a model loaded once and asked questions from Python (notebooks, services).

`Reader.from_pretrained(folder)` loads the model, its tokenizer and the window and decode settings
of the folder's training_args.json (as predict.py takes them). `reader(question, context)` answers
one question, `reader(items)` a list of them, `reader.predict_file(path)` a whole input file as the
predictions dict predict.py writes. Every call takes predict.py's path: windows from
`mrc.features.build_store` (in memory, no cache folder), length-sorted batches and the exact decoder
through `mrc.evaluation.store_predictions`; so on the same settings, answers, scores and n-best
lists equal predict.py's files exactly. One call runs at a time (a lock around the model and its
windows); a Reader keeps no global state and changes none.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from mrc import dist
from mrc.checkpoint import TRAINING_ARGS, read_model_config, read_training_args, stderr_line
from mrc.config import overlay_saved, section
from mrc.data import Example, read_examples
from mrc.examples import item_problem
from mrc.decode import NO_ANSWER_SPAN, DecodeConfig, Prediction
from mrc.errors import MRCError
from mrc.evaluation import Inference, load_for_inference, store_predictions
from mrc.features import build_store
from mrc.hub import resolve_model
from mrc.positions import too_long_for_positions
from mrc.precision import PrecisionConfig
from mrc.store import TOKENLESS_QUESTION, WindowConfig, questions_without_tokens

ERROR_MODES = ("raise", "collect")
# dtype= of from_pretrained -> the autocast predict.py's --fp16 / --bf16 give (None: float32).
FP32, FP16, BF16 = PrecisionConfig(), PrecisionConfig(fp16=True), PrecisionConfig(bf16=True)
DTYPES: dict[Any, PrecisionConfig] = {
    None: FP32, torch.float32: FP32, "float32": FP32,
    torch.float16: FP16, "float16": FP16, "fp16": FP16,
    torch.bfloat16: BF16, "bfloat16": BF16, "bf16": BF16,
}


@dataclass(frozen=True)
class Answer:
    """One answer: a span of the context, or the empty answer of an unanswerable-aware model."""

    text: str
    start: int              # char offset in the context: context[start:end] == text; -1 for the empty answer
    end: int
    score: float            # start_logit + end_logit (for the empty answer: the null score)
    probability: float      # softmax over the question's n-best entries
    start_logit: float
    end_logit: float


@dataclass(frozen=True)
class AnswerError:
    """An item that could not be answered; with errors="collect" it comes back in the item's place."""

    index: int | None       # position in the input list or file; None for a question the file reader dropped
    id: str | None          # the item's "id", when it has one
    reason: str

    def __str__(self) -> str:
        where = "a question of the file" if self.index is None else f"item {self.index}"
        return f"{where}{'' if self.id is None else f' (id {self.id!r})'}: {self.reason}"


class FilePredictions(dict):
    """`{id: answer text}`, exactly what predict.py writes to `<name>.predictions.json`, plus the
    n-best lists (`.nbest`: {id: [Answer, ...]}, built on first use) and the questions that could
    not be answered (`.errors`)."""

    def __init__(self, predictions: list[tuple[str, Prediction]], errors: list[AnswerError]):
        super().__init__((key, p.text) for key, p in predictions)
        self._predictions = predictions
        self.errors = errors

    @functools.cached_property
    def nbest(self) -> dict[str, list[Answer]]:
        return {key: [entry_answer(e) for e in p.nbest] for key, p in self._predictions}


@dataclass
class ReaderSettings:
    """How a Reader windows contexts and decodes answers (from training_args.json unless given)."""

    window: WindowConfig = section(WindowConfig)
    decode: DecodeConfig = section(DecodeConfig)
    batch_size: int = 32    # windows per forward pass, as predict.py's --batch_size

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)


def check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise MRCError(f"batch_size must be a positive integer, got {batch_size!r}")


def pick_device(device: str | torch.device, int8: bool) -> torch.device:
    """"auto": CUDA when visible (CPU for int8, a CPU mode); else the device named."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and not int8 else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise MRCError(f"device={device!r}: pass 'auto', 'cpu' or 'cuda' (or 'cuda:N')") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise MRCError(f"device={device!r} but no CUDA device is visible; use device='cpu' (or 'auto')")
    if chosen.type != "cpu" and int8:
        raise MRCError("int8=True is a CPU mode; on a GPU pass dtype=torch.float16 or torch.bfloat16 instead")
    return chosen


def pick_precision(dtype: Any, int8: bool, device: torch.device) -> PrecisionConfig:
    if not isinstance(dtype, (str, torch.dtype, type(None))) or dtype not in DTYPES:
        raise MRCError(f"dtype={dtype!r}: pass None (float32), torch.float16 or torch.bfloat16")
    precision = DTYPES[dtype]
    if int8 and precision.autocast_dtype is not None:
        raise MRCError("int8=True runs the quantized model in float32; drop dtype")
    precision.check_device(device)
    return precision


def check_positions(window: WindowConfig, positions: int, folder: Path, source: str) -> None:
    """Windows no longer than the model's position table, refused before the weights load (as predict.py)."""
    if window.max_seq_length > positions:
        raise too_long_for_positions(f"max_seq_length {window.max_seq_length} ({source})", positions, folder,
                                     f"pass window=WindowConfig(max_seq_length={positions}) or less, or fine-tune a "
                                     f"longer model with train.py --extend_positions")


def entry_answer(entry: dict) -> Answer:
    """An n-best entry (`Prediction.nbest`) as an Answer; its score summed in float32, as the decoder sums."""
    score = float(np.float32(entry["start_logit"]) + np.float32(entry["end_logit"]))
    return Answer(entry["text"], entry["char_start"], entry["char_end"], score, entry["probability"],
                  entry["start_logit"], entry["end_logit"])


def best_answer(prediction: Prediction) -> Answer:
    """The prediction's answer with its n-best entry's probability and logits (the null entry for "")."""
    span = (prediction.char_start, prediction.char_end)
    entry = next(e for e in prediction.nbest if (e["char_start"], e["char_end"]) == span)
    return dataclasses.replace(entry_answer(entry), score=prediction.score)


def item_example(index: int, item: Any) -> tuple[Example | None, str | None, str | None]:
    """(Example with id str(index), the item's own id, why it cannot be answered) for one input item."""
    if isinstance(item, dict):
        question, context, own_id = item.get("question"), item.get("context"), item.get("id")
        own_id = None if own_id is None else str(own_id)
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        (question, context), own_id = item, None
    else:
        return None, None, (f"expected a dict with 'question' and 'context' or a (question, context) pair, "
                            f"got {type(item).__name__}")
    for name, value in (("question", question), ("context", context)):
        if not isinstance(value, str):
            return None, own_id, f"'{name}' must be a string, got {type(value).__name__}"
    example = Example(id=str(index), question=question, context=context, answers=())
    return example, own_id, item_problem(example)


class Reader:
    """A QA model loaded once; call it with a question and a context, or a list of items."""

    def __init__(self, model: nn.Module, folder: Path, settings: ReaderSettings, *, device: torch.device,
                 precision: PrecisionConfig = PrecisionConfig(), sources: dict[str, str] | None = None):
        self.model = model.eval()
        self.folder = folder            # the model folder: its tokenizer builds the windows
        self.settings = settings
        self.device = device
        self.precision = precision
        self.sources = sources or {}    # per window/decode setting: "given", "training_args.json" or "default"
        self._ctx = dist.DistContext(rank=0, world_size=1, local_rank=0, device=device)
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, device: str | torch.device = "auto", dtype: Any = None,
                        int8: bool = False, batch_size: int = 32, window: WindowConfig | None = None,
                        decode: DecodeConfig | None = None, revision: str | None = None,
                        cache_dir: str | Path | None = None, quiet: bool = False) -> Reader:
        """Load a model folder, or a hub id (downloaded once through `mrc.hub`), for answering.

        Window and decode settings come from the folder's training_args.json unless `window` /
        `decode` are given, else the defaults. `dtype`: None (float32), torch.float16 or
        torch.bfloat16 (autocast, as predict.py --fp16 / --bf16). `int8`: dynamic int8 encoder
        (CPU, as predict.py --int8). `revision` (branch, tag or commit) and `cache_dir` (the hub
        cache) apply to hub ids, as predict.py's --revision / --cache_dir. `quiet`: no lines on
        stderr (download progress, weights the folder lacks).
        """
        say = None if quiet else stderr_line
        folder = resolve_model(path_or_hub_id, revision, cache_dir, flag="Reader.from_pretrained", say=say)
        chosen = pick_device(device, int8)
        precision = pick_precision(dtype, int8, chosen)
        given = frozenset(f.name for cfg in (window, decode) if cfg is not None for f in dataclasses.fields(cfg))
        base = ReaderSettings(window=window or WindowConfig(), decode=decode or DecodeConfig(), batch_size=batch_size)
        settings, sources = overlay_saved(base, ("window", "decode"), read_training_args(folder), given, TRAINING_ARGS)
        sources = {k: "given" if v == "flag" else v for k, v in sources.items()}
        check_positions(settings.window, read_model_config(folder).max_position_embeddings, folder,
                        sources["max_seq_length"])
        model = load_for_inference(folder, int8=int8, device=chosen, say=say)
        return cls(model, folder, settings, device=chosen, precision=precision, sources=sources)

    def __repr__(self) -> str:
        w, d = self.settings.window, self.settings.decode
        return (f"Reader({str(self.folder)!r}, device={str(self.device)!r}, max_seq_length={w.max_seq_length}, "
                f"doc_stride={w.doc_stride}, n_best_size={d.n_best_size}, "
                f"version_2_with_negative={d.version_2_with_negative})")

    def __call__(self, question_or_items: str | Iterable, context: str | None = None, *, top_k: int | None = None,
                 batch_size: int | None = None, errors: str = "raise") -> Any:
        """Answer one question, or a list of items, in input order.

        `reader(question, context)` -> an Answer; `reader(items)` -> a list with one entry per item
        (dicts with "question", "context" and optionally "id", or (question, context) pairs).
        `top_k=k`: each entry is the n-best list of k Answers instead (decoded with n_best_size k,
        as predict.py --n_best_size k). A bad item raises MRCError naming it, before the model
        runs when it can be seen in the input; with errors="collect" it comes back as an
        AnswerError in its place and the rest are answered.
        """
        if isinstance(question_or_items, str):
            if not isinstance(context, str):
                raise MRCError("reader(question, context): the context must be a string too")
            return self(((question_or_items, context),), top_k=top_k, batch_size=batch_size, errors=errors)[0]
        if context is not None:
            raise MRCError("reader(items) takes the contexts inside the items; pass no second argument")
        if isinstance(question_or_items, dict):
            raise MRCError("reader(items): pass a list of dicts, not one dict (or call reader(question, context))")
        try:
            items = list(question_or_items)
        except TypeError:
            raise MRCError(f"reader(items): items must be a list of dicts or (question, context) pairs, got "
                           f"{type(question_or_items).__name__}") from None
        examples, own_ids, failures = [], [], {}
        for index, item in enumerate(items):
            example, own_id, problem = item_example(index, item)
            own_ids.append(own_id)
            if problem is not None:
                failures[index] = AnswerError(index, own_id, problem)
            else:
                examples.append(example)
        predictions = self._predict(examples, own_ids, failures, self._inference(batch_size, top_k), errors)
        if top_k is None:
            return [failures.get(i) or best_answer(predictions[i]) for i in range(len(items))]
        return [failures.get(i) or [entry_answer(e) for e in predictions[i].nbest] for i in range(len(items))]

    def predict_file(self, path: str | Path, *, batch_size: int | None = None, errors: str = "raise",
                     data_format: str = "auto") -> FilePredictions:
        """Every question of a KorQuAD/SQuAD/KLUE JSON or JSON Lines file -> {id: answer text}.

        The dict equals predict.py's `<name>.predictions.json` for the file; `.nbest` gives the
        n-best lists of `<name>.nbest.json` as Answers. The questions predict.py lists in
        errors.jsonl raise MRCError (errors="raise", the default), or are left out of the dict and
        listed in `.errors` (errors="collect").
        """
        read, stats = read_examples([Path(path)], data_format=data_format)
        # Questions the file reader dropped (answer text not in the context) go first, under negative keys.
        failures = {-1 - i: AnswerError(None, None, where) for i, where in enumerate(stats.skipped_where)}
        examples, own_ids = [], []
        for index, example in enumerate(read):
            own_ids.append(example.id)
            problem = item_problem(example)
            if problem is not None:
                failures[index] = AnswerError(index, example.id, problem)
            else:
                examples.append(dataclasses.replace(example, id=str(index)))
        predictions = self._predict(examples, own_ids, failures, self._inference(batch_size, None), errors,
                                    source=f"{path}: ")
        ordered = [(own_ids[index], predictions[index]) for index in sorted(predictions)]
        return FilePredictions(ordered, [failures[key] for key in sorted(failures)])

    # -----------------------------------------------------------------------------------------

    def _inference(self, batch_size: int | None, top_k: int | None) -> Inference:
        if batch_size is not None:
            check_batch_size(batch_size)
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise MRCError(f"top_k must be a positive integer (the n-best size), got {top_k!r}")
        decode = self.settings.decode if top_k is None else dataclasses.replace(self.settings.decode, n_best_size=top_k)
        return Inference(batch_size=batch_size or self.settings.batch_size, precision=self.precision, decode=decode)

    def _predict(self, examples: list[Example], own_ids: list[str | None], failures: dict[int, AnswerError],
                 how: Inference, errors: str, *, source: str = "") -> dict[int, Prediction]:
        """{input position: Prediction} for `examples` (each Example's id is its input position).

        Items found unanswerable on the way join `failures`; with errors="raise" the first failure
        raises, before the model runs when the input or its windows show it.
        """
        if errors not in ERROR_MODES:
            raise MRCError(f"errors={errors!r}: pass 'raise' (stop at the first bad item) or 'collect' "
                           f"(bad items come back as AnswerError entries)")
        raise_first(failures, errors, source)
        predictions: dict[int, Prediction] = {}
        if not examples:
            return predictions
        with self._lock:
            store = build_store(examples, self.folder, self.settings.window, labels=False, use_cache=False)
            for e in questions_without_tokens(store).tolist():
                index = int(store.example_ids[e])
                failures[index] = AnswerError(index, own_ids[index], TOKENLESS_QUESTION)
            raise_first(failures, errors, source)
            for prediction in store_predictions(self.model, store, self._ctx, how):
                index = int(prediction.example_id)
                if index in failures:
                    continue
                if not prediction.nbest:
                    failures[index] = AnswerError(index, own_ids[index], NO_ANSWER_SPAN)
                    continue
                predictions[index] = prediction
        raise_first(failures, errors, source)
        return predictions


def raise_first(failures: dict[int, AnswerError], errors: str, source: str) -> None:
    if errors == "raise" and failures:
        raise MRCError(f"{source}{failures[min(failures)]}; fix or drop it, or pass errors='collect' to have "
                       f"it returned as an AnswerError while the rest are answered")
