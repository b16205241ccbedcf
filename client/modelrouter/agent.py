"""The seed's routed agents: a role (system prompt, default task type) over UnifiedModelClient.

agent = create_routed_coder_agent()
response = await agent.generate_response("Write a sort function", context={"complexity": 3})
if response["success"]: print(response["content"])
"""

from __future__ import annotations

from typing import Any

from fleet_shared.schema import TaskType
from modelrouter.client import UnifiedModelClient

CODER_SYSTEM_PROMPT = (
    "You are a senior software engineer. Answer with correct, idiomatic, tested code and a brief explanation."
)


class RoutedAgent:
    """An agent whose every response is routed by the fleet."""

    def __init__(
        self,
        client: UnifiedModelClient,
        *,
        name: str,
        system: str,
        task_type: TaskType = TaskType.CODE_GENERATION,
        default_complexity: int = 5,
    ) -> None:
        self.client = client
        self.name = name
        self.system = system
        self.task_type = task_type
        self.default_complexity = default_complexity

    async def generate_response(self, prompt: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
        """Route and answer ``prompt``. ``context`` may carry ``complexity``, ``task_type`` and
        ``force_model``; the rest is passed to the job's context."""
        context = dict(context or {})
        complexity = context.pop("complexity", self.default_complexity)
        task_type = context.pop("task_type", self.task_type)
        return await self.client.generate(
            prompt,
            task_type,
            complexity,
            context or None,
            system=self.system,
            metadata={"agent": self.name},
        )

    async def close(self) -> None:
        await self.client.close()


def create_routed_coder_agent(client: UnifiedModelClient | None = None, **client_options: Any) -> RoutedAgent:
    """A coding agent (task type code_generation) whose responses the fleet routes."""
    return RoutedAgent(client or UnifiedModelClient(**client_options), name="coder", system=CODER_SYSTEM_PROMPT)
