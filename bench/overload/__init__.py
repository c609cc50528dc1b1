"""Graceful behaviour under overload (issue 18.5): a 10x burst the embed side cannot keep up with.

The real pipeline on this machine, on a broker of its own (``--broker-port``, default 29411, data
in a temporary folder; ``--bootstrap`` uses a running one instead): one stream worker
(``interest-stream stream``) and one embed worker (``interest-stream embed``, embedded Qdrant in
a temporary folder) as separate processes, exactly as deployed. The bench publishes:

1. ``steady``: ``--rate`` events/s (default 100) for ``--steady`` s;
2. ``burst``: ten times that (``--burst-factor``) for ``--burst`` s, plus, at its start, a block
   of ``--hot-events`` events of one user sent back to back (a client replaying its history):
   the only load that makes one user's pending events pass ``pending_cap`` between two flushes;
3. ``recover``: ``--rate`` again until both groups' lag is back to the steady level, then
   ``--tail`` s more (at most ``--max-recover`` s).

On this 2-core machine the embed worker folds ~500 events/s (``bench/results/
freshness_bench_quick.json``), so a 1,000 events/s burst leaves it behind: its backlog on
``interest.updates`` grows for the whole burst and is worked off afterwards.

Every second the bench samples: the RSS of each worker (``/proc/PID/status``), both workers'
``/metrics`` (what Prometheus would scrape, the consumer lag each worker exports included) and
consumer lag of both groups read by :class:`streams.lag.LagCollector` itself (the code behind
``interest-stream lag``; 1 s apart, finer than the workers' own 5 s refresh). It reports:

- stream worker RSS: steady median vs peak during the burst and the recovery, and how much it
  grew in the burst's second half (a bounded worker is flat while the embed backlog grows); the
  limits that bound it (``StreamSettings``: pending cap and bytes, folding, dedupe ring, batch
  size, RocksDB cache and memtables) and the stream counters (``interest_stream_folded_total``);
- lag on ``interest.updates`` (the embed group) and on the events topic (the stream group): peak
  records and seconds, and the time to drain after the burst;
- ``--write-promtool-test [PATH]``: a promtool unit test (default
  ``deploy/prometheus/alerts_overload_test.yml``) whose input series are the workers' scraped
  series of this run, with what the alert rules must say about them (see
  :func:`bench.overload.promtool.promtool_test`);
  ``--from-series FILE`` writes it from a saved run without running the bench again.

Prints a table, writes ``bench/results/overload[_quick].json`` (summary and the 1 s samples of
RSS and lag) and ``bench/results/overload_series[_quick].json`` (the scraped series).

    python -m bench.overload --quick                       # ~4 min: 20 s steady, 30 s burst
    python -m bench.overload --write-promtool-test         # ~6 min: 60 s steady, 60 s burst
    python -m bench.overload --from-series bench/results/overload_series.json --write-promtool-test

Modules, one idea each:

- :mod:`bench.overload.series`: which scraped families are kept, their columnar form, the
  deployed names of groups and targets, promtool's values notation;
- :mod:`bench.overload.procs`: the bench's broker and the two worker processes;
- :mod:`bench.overload.sampler`: the 1 s samples of RSS, ``/metrics`` and consumer lag;
- :mod:`bench.overload.load`: the publisher and its phases (steady, burst, recover);
- :mod:`bench.overload.pipeline`: topics, workers, sampler and warm-up of one run;
- :mod:`bench.overload.analysis`: the summary of a run and its verdicts;
- :mod:`bench.overload.replay`: the run's series as Prometheus holds them, alerts decided in Python;
- :mod:`bench.overload.promtool`: the promtool unit test written from a run;
- :mod:`bench.overload.driver`: arguments, the run from start to end, the table and the JSON.
"""
