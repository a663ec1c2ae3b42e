"""The built-in demo (`make demo`, `python -m mrc.demo`): the whole pipeline on synthetic Korean data.

Not part of the library's core: nothing in `mrc` imports this package. `run` is the demo itself;
`synthetic` and `korean` generate its data; `untrained` makes its WordPiece vocab and its
randomly initialised model.
"""
