"""The ledger: records every routing decision, attempt and result in PostgreSQL and serves
RouterAnalytics. Run it with ``python -m fleet_ledger``."""

from fleet_ledger.analytics import RouterAnalytics
from fleet_ledger.migrate import migrate
from fleet_ledger.service import Ledger

__all__ = ["Ledger", "RouterAnalytics", "migrate"]
