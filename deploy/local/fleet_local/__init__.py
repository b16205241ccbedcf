"""The local cluster of a developer: ``make up`` / ``down`` / ``status`` (``cluster``), the
process supervisor, embedded nats-server and PostgreSQL, the probes of what answers, the demo."""
