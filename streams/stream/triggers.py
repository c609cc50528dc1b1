"""When a user's pending events become an update job: the trigger policy. Pure, no I/O, no clock.

A stream worker keeps, per user, the events that arrived since the user's last flush. The policy
looks at a :class:`PendingView` of that state and the wall clock ``now_ms`` (passed in, so the
policy is deterministic and testable) and answers whether to flush now and why:

* ``age``    -- the oldest pending event's clock started ``age_ms - lead_ms`` ago (see
  ``first_seen_ms``). ``age_ms`` is ``max_delay_ms`` minus ``slack_ms``, the part of the latency
  budget spent elsewhere (the consumer's batch buffer, the flush timer's tick, producing the job).
  ``lead_ms`` (0 unless the caller passes one) is how much earlier still the worker flushes
  because its own flushes have been landing late: :class:`FlushLead` learns it from the delivered
  jobs, so a busy worker keeps event -> job latency within ``max_delay_ms`` too. This trigger
  fires even for an idle user: the worker's timer asks :meth:`TriggerPolicy.next_check_ms` when
  to look again.
* ``count``  -- ``flush_count`` events are pending, so the job is worth sending early.
* ``window`` -- the activity window (event time, tumbling, ``window_ms``) of the earliest pending
  event has closed: the user has an event in a later window, so the closed window's counts are
  final and travel with this job.

``count`` and ``window`` are gated by ``min_interval_ms`` since the user's last flush, so a user
who emits hundreds of events a second still causes at most ``1000 / min_interval_ms`` jobs a
second; events keep accumulating (bounded by the state's pending cap) until the gate opens. The
``age`` trigger needs no gate: the oldest pending event's clock starts no earlier than the last
flush, so two ``age`` flushes are at least ``age_ms - lead_ms`` apart (the lead is capped at half
of ``age_ms``).

Defaults: ``max_delay_ms`` 1000, ``flush_count`` 64, ``min_interval_ms`` 250. A user at 100
events/s flushes on ``count`` about every 0.64 s (about 1.6 jobs/s, 64 events each); a user at
1 event/s flushes on ``age`` (about 1 job/s); nobody gets more than 4 jobs/s.

>>> p = TriggerPolicy(flush_count=3, max_delay_ms=1000, slack_ms=100, min_interval_ms=250)
>>> v = PendingView(count=1, first_seen_ms=10_000, last_flush_ms=0, min_ts_ms=5, max_ts_ms=5)
>>> p.decide(v, now_ms=10_500) is None, p.decide(v, now_ms=10_900), p.next_check_ms(v)
(True, <FlushReason.AGE: 'age'>, 10900)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FlushReason(StrEnum):
    """Why a user was flushed; also a metric label, so never rename one."""

    AGE = "age"
    COUNT = "count"
    WINDOW = "window"


@dataclass(frozen=True, slots=True)
class PendingView:
    """What the policy needs to know about one user's pending events.

    ``first_seen_ms``: when the oldest pending event's latency clock started (the stream worker
    uses its Kafka timestamp, clamped to [last flush, arrival]; never before ``last_flush_ms``).
    ``last_flush_ms``: wall time of the user's last flush (0 if never). ``min_ts_ms`` and
    ``max_ts_ms``: the smallest event time among pending events and the largest event time the
    user ever sent (both epoch ms).
    """

    count: int
    first_seen_ms: int
    last_flush_ms: int
    min_ts_ms: int
    max_ts_ms: int


@dataclass(frozen=True, slots=True)
class TriggerPolicy:
    """Flush thresholds; see the module docstring for the rules and the defaults' reasoning."""

    flush_count: int = 64
    max_delay_ms: int = 1000
    min_interval_ms: int = 250
    window_ms: int | None = 60_000
    slack_ms: int = 100

    def __post_init__(self) -> None:
        if self.flush_count < 1:
            raise ValueError(f"flush_count must be >= 1, got {self.flush_count}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {self.max_delay_ms}")
        if not 0 <= self.slack_ms <= self.max_delay_ms:
            raise ValueError(
                f"slack_ms must be within [0, max_delay_ms={self.max_delay_ms}],"
                f" got {self.slack_ms}"
            )
        if self.min_interval_ms < 0:
            raise ValueError(f"min_interval_ms must be >= 0, got {self.min_interval_ms}")
        if self.window_ms is not None and self.window_ms < 1:
            raise ValueError(f"window_ms must be >= 1 or None, got {self.window_ms}")

    @property
    def age_ms(self) -> int:
        """How long the oldest pending event may wait in the worker before an ``age`` flush."""
        return self.max_delay_ms - self.slack_ms

    @property
    def max_lead_ms(self) -> int:
        """The largest ``lead_ms`` that counts (half of ``age_ms``: bounds the age flush rate)."""
        return self.age_ms // 2

    def _age_due(self, view: PendingView, lead_ms: int) -> int:
        return view.first_seen_ms + self.age_ms - min(max(lead_ms, 0), self.max_lead_ms)

    def window_closed(self, view: PendingView) -> bool:
        """Whether the event-time window of the earliest pending event has closed."""
        if self.window_ms is None or view.count == 0:
            return False
        return view.max_ts_ms // self.window_ms > view.min_ts_ms // self.window_ms

    def decide(self, view: PendingView, now_ms: int, lead_ms: int = 0) -> FlushReason | None:
        """The reason to flush this user now, or None to keep waiting (``lead_ms``: flush on age
        that much earlier, at most :attr:`max_lead_ms`)."""
        if view.count <= 0:
            return None
        if now_ms >= self._age_due(view, lead_ms):
            return FlushReason.AGE
        if now_ms - view.last_flush_ms >= self.min_interval_ms:
            if view.count >= self.flush_count:
                return FlushReason.COUNT
            if self.window_closed(view):
                return FlushReason.WINDOW
        return None

    def next_check_ms(self, view: PendingView, lead_ms: int = 0) -> int | None:
        """The earliest wall time at which :meth:`decide` says flush, if no new event arrives.

        ``decide(view, t, lead_ms)`` is not None exactly when ``t >= next_check_ms(view,
        lead_ms)``; None means nothing is pending. The worker's timer keeps users ordered by
        this time.
        """
        if view.count <= 0:
            return None
        due = self._age_due(view, lead_ms)
        if view.count >= self.flush_count or self.window_closed(view):
            due = min(due, view.last_flush_ms + self.min_interval_ms)
        return due


class FlushLead:
    """How much earlier to flush on ``age`` so that jobs still land within ``max_delay_ms``.

    A job's latency in the worker is ``age_ms - lead + late``, where ``late`` is how long after
    its planned moment (``first_seen_ms + age_ms - lead``) the job was delivered: the timer's
    tick, waiting for the batch in progress, the producer flush and the send. Keeping it within
    ``max_delay_ms`` needs ``lead >= late - slack_ms``. :meth:`update` takes each age flush's
    ``late``; :meth:`get` is a peak of them that fades by ``decay`` per update, less
    ``slack_ms``, within ``[0, max_lead_ms]`` (a sample past that bound counts as the bound).
    An idle worker keeps lead 0 (flushes at the planned ``age_ms``); a worker whose flushes land
    late (a busy machine, a slow broker) flushes earlier until they fit again. The worker counts
    only its timer's flushes, from their planned moment or its previous tick, whichever is later:
    users that arrived already due (a backlog) are late for reasons no lead can help.

    >>> lead = FlushLead(TriggerPolicy(max_delay_ms=1000, slack_ms=100), decay=0.5)
    >>> lead.update(40); lead.get()  # within the slack
    0
    >>> lead.update(300); lead.get()
    200
    >>> lead.update(0); lead.get()  # fading: the peak halves with each update
    50
    """

    def __init__(self, policy: TriggerPolicy, *, decay: float = 0.998) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.slack_ms = policy.slack_ms
        self.max_lead_ms = policy.max_lead_ms
        self._peak = 0.0

    def update(self, late_ms: float) -> None:
        # A sample beyond what saturates the lead (a stall) counts as saturating it, so that it
        # fades as fast as any other.
        late = min(float(late_ms), float(self.max_lead_ms + self.slack_ms))
        self._peak = max(late, self._peak * self.decay)

    def get(self) -> int:
        return min(self.max_lead_ms, max(0, round(self._peak) - self.slack_ms))
