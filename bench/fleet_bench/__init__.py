"""The benchmark suite: ``python -m fleet_bench`` (``make bench``).

Everything runs on this machine over loopback: a private nats-server, a fresh PostgreSQL
database (created and dropped), the provider emulators and the fleet as real subprocesses
(``python -m fleet_router`` ...), and a separate load-generator process. The figures go to
``.bench/latest.json`` and a table of target vs measured is printed.

Modules, one role each:
    infra      private servers, the fleet's subprocesses, /proc sampling (RSS, CPU)
    loadgen    the load generator process: paced JetStream publishes, Results, commit notices
    micro      the single-component cases: policy, ledger writer, provider calls, NATS limits
    cases      the end-to-end cases (latency, ramp, slow provider, scaling, ledger service)
    profiling  py-spy attached to fleet processes, summarised as text under .bench/
    report     the JSON figures, targets and the printed table
"""
