"""Provider emulators: local HTTP servers speaking the exact LM Studio, OpenAI, Anthropic and
Gemini protocols, with faults asked for by markers in the prompt (see ``faults``).

    python -m fleet_emulators --provider openai --port 18081
"""

from __future__ import annotations

from fleet_emulators.faults import Faults, parse_faults
from fleet_emulators.server import (
    BASE_PATH,
    EMULATORS,
    EmulatorHandle,
    base_url,
    create_app,
    emulator_server,
    running_emulator,
    serve,
)

__all__ = [
    "BASE_PATH",
    "EMULATORS",
    "EmulatorHandle",
    "Faults",
    "base_url",
    "create_app",
    "emulator_server",
    "parse_faults",
    "running_emulator",
    "serve",
]
