"""The ``maillens`` command: a thin click layer over the library.

Each sub-command lives in its own module here and is imported only when it is
run (see ``main.LAZY_COMMANDS``), so ``maillens --help`` and cron start fast.
"""
