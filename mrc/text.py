"""The one step every reader takes from JSON text to values: parse, bound, and clean the strings.

`parse_json` turns every way a JSON text can fail (bad syntax, nesting deeper than Python can
follow, an integer literal longer than Python converts) into an `MRCError` naming the place.

Unpaired surrogates: JSON may spell a lone UTF-16 surrogate (`"\\ud83d"` with no low half after
it), and a command line with bytes that are not UTF-8 reaches Python as surrogate escapes
(`\\udcXX`). Either is a `str` that cannot be encoded as UTF-8, so hashing, tokenizing or writing
it fails far from where it came in. Each such code point is replaced by U+FFFD (the replacement
character), one for one, so every character offset (`answer_start`, the n-best's `char_start`)
keeps its meaning; the readers count the replacements (`ReadStats.replaced`, in the read summary).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from mrc.errors import MRCError

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JSONTextError(MRCError):
    """Text that is not one JSON value; `reason` is the parser's own words ("Extra data", ...)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def clean_text(text: str) -> tuple[str, int]:
    """(`text` with each surrogate code point replaced by U+FFFD, how many were replaced)."""
    if text.isascii():  # the common case: one scan in C
        return text, 0
    return _SURROGATE.subn(REPLACEMENT, text)


def clean_value(value: Any) -> tuple[Any, int]:
    """`clean_text` applied to every string (keys included) of a parsed JSON value, iteratively
    (the value may be nested deeper than Python's recursion limit)."""
    if isinstance(value, str):
        return clean_text(value)
    replaced = 0
    root = [value]
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, item in items:
            if isinstance(key, str):
                new_key, n = clean_text(key)
                if n:
                    replaced += n
                    del node[key]
                    node[new_key] = item
                    key = new_key
            if isinstance(item, str):
                node[key], n = clean_text(item)
                replaced += n
            elif isinstance(item, (dict, list)):
                stack.append(item)
    return root[0], replaced


def parse_json(text: str, where: str, *, line_of_file: bool = False) -> tuple[Any, int]:
    """(the JSON value of `text` with its strings cleaned, surrogates replaced); an MRCError naming
    `where` and the position when `text` is not JSON Python can hold. `line_of_file`: `text` is one
    line of a JSON Lines file and `where` already names it (`file:12`), so only the column is given."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        at = f"column {e.colno}" if line_of_file else f"line {e.lineno} column {e.colno}"
        raise JSONTextError(f"{where}: not valid JSON at {at}: {e.msg}", e.msg) from None
    except RecursionError:
        raise JSONTextError(f"{where}: JSON nested too deeply for Python to read (thousands of levels of [ or {{); "
                            f"flatten the file", "too deep") from None
    except ValueError:  # Python converts integer literals of at most 4,300 digits (sys.get_int_max_str_digits)
        raise JSONTextError(f"{where}: holds an integer of more than {sys.get_int_max_str_digits():,} digits, "
                            f"more than Python reads; write such numbers as strings", "bad value") from None
    if _SURROGATE_ESCAPE.search(text) is None:  # strict UTF-8 text can hold a surrogate only as an escape
        return value, 0
    return clean_value(value)
