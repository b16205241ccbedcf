"""asyncpg's array parameters checked by concrete type instead of collections.abc.

The ledger writes every batch as one array per column (``writer``): a few dozen array
elements per job. asyncpg (0.32: ``protocol/codecs/array.pyx``) asks of every element
whether it is itself an array, with ``isinstance(elem, collections.abc.Iterable)`` and
``Sized``: for an int, a float or None that is a Python-level ``ABCMeta.__instancecheck__``
call, for a str two. Measured on the ledger: about a tenth of its CPU per job, and roughly
a third of the time to send a 15-row, 24-column statement (245 against 285-565 us).

``narrow`` points those three names of asyncpg's protocol module at the concrete types
this process passes: a list (or tuple) is an array, a dict is not. The only array
arguments the ledger passes are lists (``writer.columns``, the analytics' provider lists);
after ``narrow`` an array argument that is another iterable (a set, a generator with a
length) is refused (asyncpg's DataError "a sized iterable container expected"), where it
was accepted before. Only the ledger's service calls it, once at start (and the bench's
writer case, which times the writer as the service runs it); the names are
replaced only where they still hold the ABCs asyncpg imported (nothing happens when
asyncpg moves them).
"""

from __future__ import annotations

import collections.abc
import logging

log = logging.getLogger(__name__)

#: asyncpg's name -> (what it must be now, what it becomes)
_NARROWED = {
    "IterableABC": (collections.abc.Iterable, (list, tuple)),
    "SizedABC": (collections.abc.Sized, (list, tuple)),
    "MappingABC": (collections.abc.Mapping, dict),
}


def narrow() -> bool:
    """Make asyncpg's array checks concrete-type checks; True when they are (now or already)."""
    try:
        from asyncpg.protocol import protocol
    except ImportError:  # asyncpg reorganised: leave it as it is
        return False
    names = vars(protocol)
    if all(names.get(name) == new for name, (_, new) in _NARROWED.items()):
        return True
    if any(names.get(name) is not old for name, (old, _) in _NARROWED.items()):
        log.info("asyncpg's array checks are not where expected: left as they are")
        return False
    for name, (_, new) in _NARROWED.items():
        setattr(protocol, name, new)
    return True
