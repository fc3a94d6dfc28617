"""The single place LND's compiled protos are imported (from lnd-grpc-client's ``lndgrpc.compiled``).

Loading a second copy of LND's protos in one process fails with "duplicate symbol", so both the lnd
backend and the simnet import them from here. Note: importing ``lndgrpc`` sets
``GRPC_SSL_CIPHER_SUITES=HIGH+ECDSA`` for the whole process (LND's certs are ECDSA).
"""

from lndgrpc.compiled import (  # type: ignore[import-untyped]
    invoices_pb2,
    invoices_pb2_grpc,
    lightning_pb2,
    lightning_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    stateservice_pb2,
    stateservice_pb2_grpc,
)

ln = lightning_pb2
ln_grpc = lightning_pb2_grpc
inv = invoices_pb2
inv_grpc = invoices_pb2_grpc
router = router_pb2
router_grpc = router_pb2_grpc
state = stateservice_pb2
state_grpc = stateservice_pb2_grpc

__all__ = ["inv", "inv_grpc", "ln", "ln_grpc", "router", "router_grpc", "state", "state_grpc"]
