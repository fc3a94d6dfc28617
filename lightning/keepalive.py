"""gRPC keepalive as LND enforces it, for the client (``LndBackend``) and the simnet's server alike.

LND's defaults (lnd ``config.go``, the ``[grpc]`` section of ``sample-lnd.conf``):

- ``grpc.client-ping-min-wait=5s``: the server's ``keepalive.EnforcementPolicy.MinTime``; a client
  pinging more often earns a strike, and after grpc-go's two strikes the server answers GOAWAY
  ``too_many_pings`` and closes the connection.
- ``grpc.client-allow-ping-without-stream=false``: ``PermitWithoutStream``; a ping while no call is
  open is a strike too.
- ``grpc.server-ping-time=1m`` and ``grpc.server-ping-timeout=20s``: the server pings a client
  after a minute without activity and drops it when no answer comes within 20 s.

A client that keeps to this (pings no more often than every ``client_ping_min_wait_s``, and only
while a call is open) is never sent away, whatever the length of an idle stream.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# How often satwatt's client pings while a call is open (a dead link is noticed within this plus
# the timeout). LND allows every 5 s; 30 s keeps well clear of that.
CLIENT_KEEPALIVE_S = 30.0
CLIENT_KEEPALIVE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class KeepalivePolicy:
    """What an LND server permits and does (defaults: LND's)."""

    client_ping_min_wait_s: float = 5.0
    client_allow_ping_without_stream: bool = False
    server_ping_time_s: float = 60.0
    server_ping_timeout_s: float = 20.0
    max_ping_strikes: int = 2  # grpc-go's fixed maxPingStrikes

    def scaled(self, factor: float) -> KeepalivePolicy:
        """The same policy with every time multiplied by ``factor`` (tests compress time with it)."""
        return replace(
            self,
            client_ping_min_wait_s=self.client_ping_min_wait_s * factor,
            server_ping_time_s=self.server_ping_time_s * factor,
            server_ping_timeout_s=self.server_ping_timeout_s * factor,
        )

    def server_options(self) -> list[tuple[str, int]]:
        """gRPC C-core server arguments enforcing this policy (the simnet's)."""
        return [
            ("grpc.http2.min_ping_interval_without_data_ms", _ms(self.client_ping_min_wait_s)),
            ("grpc.keepalive_permit_without_calls", int(self.client_allow_ping_without_stream)),
            ("grpc.http2.max_ping_strikes", self.max_ping_strikes),
            ("grpc.keepalive_time_ms", _ms(self.server_ping_time_s)),
            ("grpc.keepalive_timeout_ms", _ms(self.server_ping_timeout_s)),
        ]

    def client_options(
        self, keepalive_s: float = CLIENT_KEEPALIVE_S, timeout_s: float = CLIENT_KEEPALIVE_TIMEOUT_S
    ) -> list[tuple[str, int]]:
        """gRPC C-core channel arguments of a client that this policy never sends away.

        Raises ``ValueError`` if ``keepalive_s`` is below what the server permits."""
        if keepalive_s < self.client_ping_min_wait_s:
            raise ValueError(
                f"keepalive every {keepalive_s:g} s is more often than the node permits "
                f"({self.client_ping_min_wait_s:g} s): it would answer GOAWAY too_many_pings"
            )
        return [
            ("grpc.keepalive_time_ms", _ms(keepalive_s)),
            ("grpc.keepalive_timeout_ms", _ms(timeout_s)),
            ("grpc.keepalive_permit_without_calls", int(self.client_allow_ping_without_stream)),
            ("grpc.http2.max_pings_without_data", 0),  # keep checking an idle stream's link
        ]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


LND_KEEPALIVE = KeepalivePolicy()
