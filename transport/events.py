"""Events that the engines emit; consume them with ``match``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from transport.stats import LinkStats, Quality

if TYPE_CHECKING:
    from transport.session import Session


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected:
    """The handshake finished; both directions are encrypted from here on."""

    peer_addr: tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """A whole message delivered on ``channel``."""

    channel: int
    message_id: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageLate:
    """A message whose deadline passed before it was complete; its fragments were discarded."""

    channel: int
    message_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed:
    """The session ended. ``by_peer`` is true when the peer sent the close."""

    reason: str
    code: int
    by_peer: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkQualityChanged:
    """The link's quality class changed (hysteresis: ``docs/LINK.md``); ``link`` is the
    estimate that made it change."""

    quality: Quality
    previous: Quality
    link: LinkStats


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionAccepted:
    """A listener accepted a new session; drive it through the listener."""

    session: Session


Event = Connected | Message | MessageLate | Closed | LinkQualityChanged | SessionAccepted
