"""framewire's command line: ``framewire send|receive|demo|bench`` (see :mod:`framewire.cli`).

Only argument parsing, output and the calls into :mod:`transport`, :mod:`stream` and
:mod:`bench` live here; nothing imports this package.
"""

__version__ = "0.1.0"
