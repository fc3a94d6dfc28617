"""The LND backend: gRPC (grpc.aio, TLS + macaroon) using lnd-grpc-client's compiled stubs."""

from lightning.lnd.backend import LndBackend, RetryPolicy
from lightning.lnd.config import LndConfig, LndConfigError, LndConnect, parse_lndconnect
from lightning.lnd.convert import map_rpc_error

__all__ = [
    "LndBackend",
    "LndConfig",
    "LndConfigError",
    "LndConnect",
    "RetryPolicy",
    "map_rpc_error",
    "parse_lndconnect",
]
