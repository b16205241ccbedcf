"""Offline token estimates, made before any provider has counted (no tokenizer download).

About four bytes of UTF-8 per token is what the OpenAI, Anthropic and Gemini tokenizers
average on English prose and code; it over-counts non-Latin scripts, which errs on the
side of a larger estimate (cost, rate-limit budget, context-window checks).
"""

from __future__ import annotations

from fleet_shared.schema import Job

#: Rough bytes of UTF-8 per token.
BYTES_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return max(1, len(text.encode()) // BYTES_PER_TOKEN)


def estimate_input_tokens(job: Job) -> int:
    """The prompt (or messages) plus the system prompt."""
    text_bytes = utf8_len(job.objective()) + utf8_len(job.system_prompt() or "")
    return max(1, text_bytes // BYTES_PER_TOKEN)


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (an ASCII text's length, known without encoding it)."""
    return len(text) if text.isascii() else len(text.encode())


def estimate_job_tokens(job: Job, max_tokens: int) -> int:
    """What a provider's tokens-per-minute limit counts for a call: input plus ``max_tokens``."""
    return estimate_input_tokens(job) + max_tokens
