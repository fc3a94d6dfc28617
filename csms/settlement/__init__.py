"""Settlement core: pure, I/O-free, deterministic (time is always an argument).

Modules (import them directly; this package imports nothing):

* ``rounding`` - the only integer divisions: money rounds down (toward the buyer), estimates toward safety.
* ``tariff``   - ``Tariff``, time-of-use schedule, ``TariffError(field, message)``, ``price_at``,
  ``increment_wh_for``, ``DEFAULT_TARIFF``.
* ``session``  - ``SessionSettlement`` (the state), ``Invoice``, and the facts: ``open_session``,
  ``record_transaction_started``, ``record_meter``, ``record_payment``, ``record_transaction_ended``.
* ``policy``   - ``step(state, tariff, now) -> Step(state, decisions)``, the decision dataclasses,
  ``apply_decision``.
* ``bill``     - ``compute_bill`` (FIFO cost, refunds, shortfall) and ``session_view`` for the API.
"""
