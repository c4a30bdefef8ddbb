"""Helpers shared by the bad-input corpus modules (``test_bad_inputs.py``, ``test_bad_runs.py``,
``test_bad_files.py``): a patched ``os``, an ``OSError`` raiser, and the one-error-line check."""
from __future__ import annotations

import os
import re


class OsWith:
    """``os`` with some functions replaced (patched into a single module, not the global ``os``)."""

    def __init__(self, **fns):
        self._fns = fns

    def __getattr__(self, name):
        return self._fns.get(name) or getattr(os, name)


def raise_oserror(code):
    """A function that raises ``OSError(code)`` whatever it is called with."""
    def f(*_a, **_k):
        raise OSError(code, os.strerror(code))
    return f


def one_error_line(err: str, cmd: str) -> str:
    """``err`` is exactly one line ``refsnn CMD: error: ...`` without a traceback; returns it."""
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"refsnn {cmd}: error: "), err
    return lines[0]


def assert_one_error_line(err: str, cmd: str, pattern: str) -> None:
    """:func:`one_error_line`, and the text after ``refsnn CMD: error: `` matches ``pattern``."""
    line = one_error_line(err, cmd)
    assert re.search(pattern, line[len(f"refsnn {cmd}: error: "):]), err
