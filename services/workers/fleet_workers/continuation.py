"""Continuing a streamed answer another model started.

When a streamed attempt fails after text was sent, its Attempt keeps that text
(``partial_content``) and the router escalates as usual. The next attempt asks its model to
continue that text rather than start over, streams only the continuation (its chunks say
``continues``: how much text came before), and its Result's content is the whole answer.

How a model is asked to continue: Anthropic takes a trailing assistant message as the start
of its answer (a prefill; it refuses trailing whitespace there, so that is trimmed). The
other protocols get the partial answer as an assistant turn and a user turn asking to go on
from exactly there, which every chat model accepts.
"""

from __future__ import annotations

import msgspec

from fleet_shared.schema import ChatMessage, Dispatch
from fleet_workers.providers.base import ProviderRequest

CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without repeating "
    "any of it and without any preamble."
)


def continued_text(d: Dispatch) -> str:
    """The text this attempt continues ("" when it starts a fresh answer)."""
    if not d.job.stream or not d.attempts:
        return ""
    last = d.attempts[-1]
    return last.partial_content or "" if not last.success else ""


def prefilled(request: ProviderRequest, partial: str, protocol: str) -> ProviderRequest:
    """``request`` asking the model to continue ``partial``."""
    if protocol == "anthropic":
        turns = [ChatMessage("assistant", partial.rstrip())]
    else:
        turns = [ChatMessage("assistant", partial), ChatMessage("user", CONTINUE_PROMPT)]
    return msgspec.structs.replace(request, messages=[*request.messages, *turns])
