"""The router service and its pure routing policy."""

from fleet_router.policy import IntelligentModelRouter, LiveState, ModelStats, RouteDecision

__all__ = ["IntelligentModelRouter", "LiveState", "ModelStats", "RouteDecision"]
