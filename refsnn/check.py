"""Former home of ``refsnn check``, now :mod:`refsnn.vectors.check`; kept only while
:mod:`refsnn.cli` registers the command under this module name."""
from refsnn.vectors.check import add_arguments, check, run

__all__ = ["check", "add_arguments", "run"]
