"""``python -m fleet_gateway``: serve the OpenAI and Anthropic APIs until SIGTERM or SIGINT.

Settings come from the environment (``fleet_gateway.settings.GatewaySettings``: the
fleet's own variables plus GATEWAY_HOST, GATEWAY_PORT, GATEWAY_KEYS...). Settings that
cannot work (a public address without keys) stop it at once with exit status 2.
"""

from __future__ import annotations

import sys

from fleet_gateway.app import Gateway
from fleet_gateway.settings import GatewaySettings, SettingsError
from fleet_shared.runner import main

if __name__ == "__main__":
    try:
        settings = GatewaySettings.from_env()
    except SettingsError as exc:
        print(f"fleet-gateway: {exc}", file=sys.stderr)
        sys.exit(2)
    main(lambda: Gateway(settings))
