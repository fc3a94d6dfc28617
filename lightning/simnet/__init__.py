"""A simulated Lightning network speaking LND's gRPC API (Lightning, Invoices, Router, State).

Embed it::

    simnet = Simnet(data_dir, port=0)          # 0 = a free port; simnet.port after start()
    await simnet.start()
    backend = LndBackend(LndConfig.from_simnet(simnet, "satwatt"))

Standalone: ``python -m lightning.simnet --help`` or the console script ``lightning-simnet``.
"""

from lightning.simnet.network import DEFAULT_NODES, AutoPay, Faults, FeePolicy, NodeSpec
from lightning.simnet.simnet import NodeFiles, Simnet

__all__ = ["DEFAULT_NODES", "AutoPay", "Faults", "FeePolicy", "NodeFiles", "NodeSpec", "Simnet"]
