"""``python -m modelrouter``: the same as the ``modelrouter`` console script."""

from modelrouter.cli import entry

entry()
