"""mrc: a fast, exact Korean machine-reading-comprehension trainer in raw PyTorch."""

__version__ = "0.1.0"
