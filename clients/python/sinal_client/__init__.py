"""sinal_client: publish events to a sinal realtime gateway from Python (standard library only).

    from sinal_client import Publisher

    with Publisher("http://localhost:3000", "sk_...") as pub:
        pub.publish("roulette:7", "roulette_update", {"roulette_id": 7, "number": 17, "color": "black"})
        pub.emit_event("strategy_update", {"roulette_id": 7, "strategy": "red_streak", "signal": "bet_black"})

Retries after network errors, timeouts, 5xx and 429 answers are safe: every event carries an
idempotency key, so the server publishes it once. 4xx answers raise a :class:`SinalError`
subclass at once; see :mod:`sinal_client.errors`.
"""

from ._version import __version__
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    SinalError,
    SinalUnavailable,
    Unauthorized,
)
from .publisher import MAX_BATCH, Publisher, new_idempotency_key

__all__ = [
    "__version__",
    "Publisher",
    "MAX_BATCH",
    "new_idempotency_key",
    "SinalError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "SinalUnavailable",
]
