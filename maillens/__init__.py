"""maillens: reads Postfix mail logs for the people who run Postfix.

The library is importable without click: ``maillens.classify`` turns text into
events, ``maillens.sources`` reads lines, the rest builds on those.
"""

__version__ = "0.1.0"
