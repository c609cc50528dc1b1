"""Chaos run: the whole pipeline under kill -9, a broker restart and a store outage, checked
against an offline recompute (``make chaos``, ``python -m bench.chaos``; bench/README.md).

- :mod:`bench.chaos.workload`: the events (users, vocabulary, duplicates, out-of-order time);
- :mod:`bench.chaos.procs`: the run's own broker and worker processes;
- :mod:`bench.chaos.run`: the publisher, the fault plan, draining;
- :mod:`bench.chaos.verify`: the log's truth, the recompute, the comparison;
- :mod:`bench.chaos.driver`: arguments, the run from start to end, the table and the JSON.
"""
