"""The model router fleet from Python: submit jobs over NATS and read their Results.

from modelrouter import UnifiedModelClient, create_routed_coder_agent
"""

from modelrouter.agent import RoutedAgent, create_routed_coder_agent
from modelrouter.client import UnifiedModelClient

__all__ = ["RoutedAgent", "UnifiedModelClient", "create_routed_coder_agent"]
