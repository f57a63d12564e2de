"""Round-trip time estimation and the retransmission timeout (RFC 6298)."""

from __future__ import annotations


class RttEstimator:
    """SRTT, RTTVAR and RTO as in RFC 6298 §2, with the ack delay removed as RFC 9002 §5.3."""

    __slots__ = (
        "_granularity_s",
        "_max_rto_s",
        "_min_rto_s",
        "latest_s",
        "min_s",
        "rttvar_s",
        "samples",
        "srtt_s",
    )

    def __init__(self, initial_s: float, min_rto_s: float, max_rto_s: float) -> None:
        self.srtt_s = initial_s
        self.rttvar_s = initial_s / 2
        self.latest_s = initial_s
        self.min_s = float("inf")
        self.samples = 0
        self._min_rto_s = min_rto_s
        self._max_rto_s = max_rto_s
        self._granularity_s = 0.001

    def update(self, sample_s: float, ack_delay_s: float) -> None:
        """Take one RTT sample (from a packet never retransmitted: Karn holds by design, since
        a retransmission always travels in a new packet with a new number)."""
        sample_s = max(sample_s, 0.0)
        self.min_s = min(self.min_s, sample_s)
        # Only subtract the peer's ack delay when the result stays above the minimum seen.
        if sample_s - ack_delay_s >= self.min_s:
            sample_s -= ack_delay_s
        self.latest_s = sample_s
        if self.samples == 0:  # RFC 6298 §2.2
            self.srtt_s = sample_s
            self.rttvar_s = sample_s / 2
        else:  # RFC 6298 §2.3, alpha = 1/8, beta = 1/4
            self.rttvar_s = 0.75 * self.rttvar_s + 0.25 * abs(self.srtt_s - sample_s)
            self.srtt_s = 0.875 * self.srtt_s + 0.125 * sample_s
        self.samples += 1

    def rto_s(self, backoff: int = 0) -> float:
        """RTO = SRTT + max(G, 4 RTTVAR) (RFC 6298 §2.3), doubled per backoff (§5.5), clamped."""
        rto = self.srtt_s + max(self._granularity_s, 4 * self.rttvar_s)
        rto = max(rto, self._min_rto_s) * (1 << min(backoff, 16))
        return min(rto, self._max_rto_s)

    def loss_delay_s(self) -> float:
        """Time threshold for declaring a packet lost: 9/8 of the larger RTT (RFC 9002 §6.1.2)."""
        return max(1.125 * max(self.srtt_s, self.latest_s), self._granularity_s)
