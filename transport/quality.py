"""The link-quality class: Apple NWPath-style good / moderate / minimal / unknown.

:class:`QualityClassifier` turns the metrics of the estimators (RTT, loss, jitter, bandwidth
from :mod:`transport.estimator`; periodic spikes from :mod:`transport.delaytrend`) into a
class with hysteresis. Like them it is pure: the time is an argument (seconds, one clock), and
it reads no clock, socket or random source. Thresholds and their sources:
:class:`QualityConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transport.delaytrend import SpikePattern
from transport.stats import Quality

__all__ = ["Quality", "QualityClassifier", "QualityConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityConfig:
    """Thresholds of :class:`QualityClassifier` (the classes are Apple NWPath.linkQuality's).

    Apple publishes no thresholds (and advises using the class to tune initial values only),
    so these come from what interactive streaming tolerates:

    - RTT: ``minimal`` above 300 ms, i.e. 150 ms one way, ITU-T G.114's limit for interactive
      use; ``good`` below 50 ms, where SRT's rule of a 3xRTT latency for retransmission on a
      clean link still gives a budget of 150 ms or less.
    - Loss: ``good`` below 1 % (the cheapest row of SRT's latency table, 3xRTT), ``minimal``
      above 10 % (the table's last row, 6xRTT; Moonlight reports POOR from 30 % *frame* loss,
      which 10 % packet loss reaches with frames of 4 or more packets).
    - Jitter (RFC 3550 J): ``good`` below 10 ms (a jitter buffer of ~3 J then stays under two
      frames at 60 fps), ``minimal`` above 50 ms (ITU-T Y.1541's delay-variation bound for its
      interactive classes 0 and 1).
    - Periodic spikes: ``good`` needs none of 20 ms or more (more than one 60 fps frame time
      lost once per period); ``minimal`` from 100 ms (six frames frozen every period).
    - Bandwidth, only when measured (see :class:`DeliveryRate`): ``minimal`` below 1 Mbit/s
      (under what 480p low-latency video needs), ``good`` from 5 Mbit/s (720p60 H.264).

    Hysteresis: a worse class once the evidence has held for ``degrade_hold_s`` (0.2 s, so a
    step shows within 0.5 s); a better one only after the metrics have stayed
    ``improve_margin`` (20 %) inside the thresholds for ``improve_hold_s`` (5 s). The margin
    and hold alone do not stop a smoothed metric that drifts around a threshold (a 5 s loss
    window at 0.7 % loss crosses 1 % and 0.8 % every minute or so), so, as route flap damping
    does (RFC 2439), a degradation within ``flap_window_s`` of the last improvement multiplies
    the next improve hold by ``flap_backoff`` (up to three times: 5, 20, 80, 320 s), and one
    after a quiet ``flap_window_s`` resets it. Between two classes, even if every degradation
    came at once, that allows at most 10 changes in the first 10 minutes and 2 per 320 s
    after; a single real degradation still recovers after 5 s. ``warmup_s``: time from the
    first update before a class is given.
    """

    good_rtt_s: float = 0.050
    minimal_rtt_s: float = 0.300
    good_loss_pct: float = 1.0
    minimal_loss_pct: float = 10.0
    good_jitter_s: float = 0.010
    minimal_jitter_s: float = 0.050
    good_spike_s: float = 0.020
    minimal_spike_s: float = 0.100
    good_bandwidth_bps: float = 5e6
    minimal_bandwidth_bps: float = 1e6
    degrade_hold_s: float = 0.2
    improve_hold_s: float = 5.0
    improve_margin: float = 0.2
    flap_window_s: float = 300.0
    flap_backoff: float = 4.0
    warmup_s: float = 1.0

    def __post_init__(self) -> None:
        pairs = [
            (self.good_rtt_s, self.minimal_rtt_s),
            (self.good_loss_pct, self.minimal_loss_pct),
            (self.good_jitter_s, self.minimal_jitter_s),
            (self.good_spike_s, self.minimal_spike_s),
            (self.minimal_bandwidth_bps, self.good_bandwidth_bps),
        ]
        if any(not 0 <= low < high for low, high in pairs):
            raise ValueError("each good threshold must be on the good side of its minimal one")
        if not 0 <= self.improve_margin < 1:
            raise ValueError("improve_margin must be in [0, 1)")
        if min(self.degrade_hold_s, self.improve_hold_s, self.flap_window_s, self.warmup_s) < 0:
            raise ValueError("hold times must not be negative")
        if self.flap_backoff < 1:
            raise ValueError("flap_backoff must be at least 1")


_RANKS: tuple[Quality, Quality, Quality] = ("minimal", "moderate", "good")


class QualityClassifier:
    """Link quality as Apple Network framework's NWPath.linkQuality: "good", "moderate",
    "minimal", or "unknown" until the first RTT sample and ``warmup_s`` of updates.
    Thresholds and hysteresis: :class:`QualityConfig`."""

    _MAX_FLAPS = 3  # with the default backoff, the improve hold grows to at most 64 x 5 s

    __slots__ = (
        "_at_least_since",
        "_at_most_since",
        "_first_s",
        "_flaps",
        "_last_improve_s",
        "config",
        "quality",
        "since_s",
    )

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        self.quality: Quality = "unknown"
        self.since_s: float | None = None
        """When the current class began (the first update's time while "unknown")."""
        self._first_s: float | None = None
        # Per class rank (0 minimal, 1 moderate, 2 good): since when the metrics have been
        # continuously no better than it (plain thresholds), and at least as good as it (with
        # the improve margin).
        self._at_most_since: list[float | None] = [None, None, None]
        self._at_least_since: list[float | None] = [None, None, None]
        self._last_improve_s: float | None = None
        self._flaps = 0  # degradations in a row that each came soon after an improvement

    def update(
        self,
        now: float,
        *,
        rtt_s: float | None,
        loss_pct: float,
        jitter_s: float,
        bandwidth_bps: float | None = None,
        spikes: SpikePattern | None = None,
        recent_spike_s: float = 0.0,
    ) -> Quality | None:
        """Take the current metrics; return the new class if it changed, else None.

        ``recent_spike_s``: the height of a latency spike seen lately, periodic or not (the
        caller decides how long "lately" lasts). It makes the first stalls of a pattern count
        at once, long before enough of them have come to establish a period."""
        config = self.config
        if self._first_s is None:
            self._first_s = self.since_s = now
        if rtt_s is None or now - self._first_s < config.warmup_s:
            return None
        spike_s = max(spikes.amplitude_s if spikes else 0.0, recent_spike_s)
        metrics = (rtt_s, loss_pct, jitter_s, spike_s, bandwidth_bps)
        plain = self._level(*metrics, margin=0.0)
        better = self._level(*metrics, margin=config.improve_margin)
        for rank in range(3):
            at_most, at_least = self._at_most_since[rank], self._at_least_since[rank]
            self._at_most_since[rank] = (
                (now if at_most is None else at_most) if plain <= rank else None
            )
            self._at_least_since[rank] = (
                (now if at_least is None else at_least) if better >= rank else None
            )
        if self.quality == "unknown":
            return self._change(now, plain)
        current = _RANKS.index(self.quality)

        for rank in range(current):  # the worst class whose evidence has held long enough
            since = self._at_most_since[rank]
            if since is not None and now - since >= config.degrade_hold_s:
                last = self._last_improve_s
                if last is not None:  # the first fall since an improvement: a flap if soon
                    recent = now - last <= config.flap_window_s
                    self._flaps = min(self._flaps + 1, self._MAX_FLAPS) if recent else 0
                    self._last_improve_s = None
                return self._change(now, rank)
        hold_s = config.improve_hold_s * config.flap_backoff**self._flaps
        for rank in range(2, current, -1):  # the best class that has held long enough
            since = self._at_least_since[rank]
            if since is not None and now - since >= hold_s:
                self._last_improve_s = now
                return self._change(now, rank)
        return None

    def _level(
        self,
        rtt_s: float,
        loss_pct: float,
        jitter_s: float,
        spike_s: float,
        bandwidth_bps: float | None,
        *,
        margin: float,
    ) -> int:
        """0 minimal, 1 moderate, 2 good; with ``margin``, every threshold is moved that far
        towards the good side (the test a better class must pass)."""
        c, tighter, looser = self.config, 1.0 - margin, 1.0 + margin
        if (
            rtt_s > c.minimal_rtt_s * tighter
            or loss_pct > c.minimal_loss_pct * tighter
            or jitter_s > c.minimal_jitter_s * tighter
            or spike_s >= c.minimal_spike_s * tighter
            or (bandwidth_bps is not None and bandwidth_bps < c.minimal_bandwidth_bps * looser)
        ):
            return 0
        if (
            rtt_s < c.good_rtt_s * tighter
            and loss_pct < c.good_loss_pct * tighter
            and jitter_s < c.good_jitter_s * tighter
            and spike_s < c.good_spike_s * tighter
            and (bandwidth_bps is None or bandwidth_bps >= c.good_bandwidth_bps * looser)
        ):
            return 2
        return 1

    def _change(self, now: float, rank: int) -> Quality:
        self.quality = _RANKS[rank]
        self.since_s = now
        return self.quality
