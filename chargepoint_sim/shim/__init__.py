"""The firmware shim: the simulator's charge point with a charger's real hardware behind it.

``chargepoint-sim shim --config shim.toml`` on the charger's node board: a Modbus energy meter
(:mod:`.meters`), a relay on a GPIO line, a file or a Modbus coil (:mod:`.relays`), optionally an EVSE's
current register and a car-presence input (:mod:`.evse`), OCPP 1.6J / 2.0.1 to satwatt through the same
charge point as the simulator (:mod:`.chargepoint`), transaction messages journalled in SQLite before
they are sent (:mod:`.queue`), all run and kept safe by :mod:`.runner`.  See README.md, "The firmware
shim on a node board", and docs/adr/0003.
"""
