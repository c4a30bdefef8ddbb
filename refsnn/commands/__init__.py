"""The commands of ``refsnn``: one module per command, each a config dataclass, a loop and one log
line per iteration (:mod:`refsnn.cli` dispatches to them). They are the only place where options are
parsed and run directories are written; the algorithms they call live in :mod:`refsnn.snn`,
:mod:`refsnn.ec` and :mod:`refsnn.nas`."""
