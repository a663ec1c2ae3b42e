"""mrc: a fast, exact Korean machine-reading-comprehension trainer in raw PyTorch.

The Python API: `Reader` (a model loaded once, asked questions), `evaluate` (the official
KorQuAD v1.0 EM/F1 of a predictions dict or file), `MRCError` (every error a user can fix).
"""

from mrc.analysis import evaluate_predictions as evaluate
from mrc.errors import MRCError
from mrc.reader import Answer, AnswerError, FilePredictions, Reader

__version__ = "0.1.0"
__all__ = ["Answer", "AnswerError", "FilePredictions", "MRCError", "Reader", "evaluate"]
