"""The model router fleet from Python: one import site for the seed's API.

    from modelrouter import IntelligentModelRouter, TaskType, UnifiedModelClient, RouterAnalytics
    from modelrouter import create_routed_coder_agent

``IntelligentModelRouter`` is the fleet's pure routing policy (``fleet_router.policy``): it
decides locally, calling nothing; the fleet's router makes the real decision. The client
objects read NATS_URL, FLEET_SUBJECT_PREFIX and the NATS credentials from the environment.
"""

from fleet_router.policy import IntelligentModelRouter, RouteDecision
from fleet_shared.schema import Job, Result, TaskType
from modelrouter.agent import RoutedAgent, create_routed_coder_agent
from modelrouter.analytics import AnalyticsError, RouterAnalytics
from modelrouter.client import UnifiedModelClient
from modelrouter.connection import FleetError, FleetUnavailable

__all__ = [
    "IntelligentModelRouter",
    "TaskType",
    "UnifiedModelClient",
    "RouterAnalytics",
    "create_routed_coder_agent",
    "RoutedAgent",
    "RouteDecision",
    "Job",
    "Result",
    "AnalyticsError",
    "FleetError",
    "FleetUnavailable",
]
