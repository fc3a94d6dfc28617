"""satwatt: an OCPP central system that sells electricity for sats."""

__version__ = "0.1.0"
