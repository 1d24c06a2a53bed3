"""When to resend unacknowledged messages on a stream with cumulative acknowledgements.

Both ends of the GM ↔ LC link number their messages and the peer acknowledges the highest
one it applied in order. A message can still go missing (the peer dropped one after a gap, a
proxy misbehaved), so unacknowledged messages are resent — but a peer that is merely *slow*
(the GM working through a backlog) must not be flooded with copies. :class:`RetransmitTimer`
decides, like TCP:

- **fast retransmit**: the peer acknowledges the same sequence number again (it received
  something after a gap) ``duplicate_threshold`` times → resend now, once per gap;
- **timer**: nothing acknowledged for ``base`` seconds since the oldest outstanding message
  was sent → resend, and double the wait for the next time (up to ``max_factor * base``);
  any progress resets it.
"""

from __future__ import annotations

__all__ = ["RetransmitTimer"]


class RetransmitTimer:
    """Retransmission decisions for one sender.

    Parameters
    ----------
    base
        Seconds without acknowledgement progress before the first timer-driven resend.
    max_factor
        Cap of the exponential back-off: the wait never exceeds ``base * max_factor``.
    duplicate_threshold
        Repeated acknowledgements of one sequence number that trigger a fast retransmit.

    Raises
    ------
    ValueError
        ``base`` is not positive, or ``max_factor`` / ``duplicate_threshold`` below 1.
    """

    def __init__(self, base: float, *, max_factor: int = 8, duplicate_threshold: int = 3) -> None:
        if not base > 0:
            raise ValueError(f"base must be > 0, not {base!r}")
        if max_factor < 1 or duplicate_threshold < 1:
            raise ValueError("max_factor and duplicate_threshold must be >= 1")
        self.base = base
        self._max_factor = max_factor
        self._threshold = duplicate_threshold
        self._factor = 1
        self._since = 0.0
        self._duplicates = 0
        self._fast_for: int | None = None

    @property
    def wait(self) -> float:
        """Current timer length in seconds (``base`` times the back-off factor)."""
        return self.base * self._factor

    def restart(self, now: float) -> None:
        """Forget history (a new stream): the timer runs from ``now`` at its base length."""
        self._factor = 1
        self._since = now
        self._duplicates = 0
        self._fast_for = None

    def on_send(self, outstanding_before: bool, now: float) -> None:
        """A message was sent; with nothing outstanding before, the timer starts now."""
        if not outstanding_before:
            self._since = now

    def on_ack(self, seq: int, acked_before: int, outstanding: bool, now: float) -> bool:
        """An acknowledgement arrived; True when it calls for a fast retransmit.

        Parameters
        ----------
        seq
            The acknowledged sequence number.
        acked_before
            The highest sequence number acknowledged before this one.
        outstanding
            Whether messages after ``acked_before`` were sent and are unacknowledged.
        now
            Monotonic time.
        """
        if seq > acked_before:
            self._factor = 1
            self._since = now
            self._duplicates = 0
            self._fast_for = None
            return False
        if not outstanding or seq != acked_before:
            return False
        self._duplicates += 1
        if self._duplicates >= self._threshold and self._fast_for != seq:
            self._fast_for = seq
            self._since = now
            return True
        return False

    def due(self, outstanding: bool, now: float) -> bool:
        """Whether the timer has expired with messages outstanding."""
        return outstanding and now - self._since >= self.wait

    def fired(self, now: float) -> None:
        """Record a timer-driven resend: restart the timer with twice the wait (capped)."""
        self._since = now
        self._factor = min(self._factor * 2, self._max_factor)

    def remaining(self, now: float) -> float:
        """Seconds until the timer expires (0 when due); ``wait`` when it is not running."""
        return max(0.0, self._since + self.wait - now)
