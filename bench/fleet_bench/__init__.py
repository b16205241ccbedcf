"""The benchmark suite: ``python -m fleet_bench`` (``make bench``).

Everything runs on this machine over loopback: a private nats-server, a fresh PostgreSQL
database (created and dropped), the provider emulators and the fleet as real subprocesses
(``python -m fleet_router`` ...), and a separate load-generator process. The figures go to
``.bench/latest.json`` (medians over repetitions, their spread, ratios to the floor and to
the direct call) and a table of target vs measured is printed; see docs/performance.md.

Modules, one role each:
    infra      private servers, the fleet's subprocesses, /proc sampling (RSS, CPU)
    loadgen    the load generator process: paced JetStream publishes, Results, commit notices
    micro      the single-component cases: policy, ledger writer, provider calls, NATS limits
    cases      the end-to-end cases (latency, ramp, slow provider, scaling, ledger service)
    floor      the bare reference pipeline (intake, worker, writer): the fleet's hops, none of its logic
    compare    the fleet, the floor and the direct HTTP call in one case, closed-loop request-reply
    closedloop the load generator's closed-loop steps (used by compare)
    ratios     ratios within a repetition; medians and spread over repetitions
    profiling  py-spy attached to fleet processes, summarised as text under .bench/
    report     the JSON figures, targets and the printed table
"""
