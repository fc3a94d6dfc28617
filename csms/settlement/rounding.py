"""The only place where settlement divides integers: every rounding rule, written down once.

Two directions, for two different reasons:

* **Money rounds toward the buyer.** ``msat_for_energy`` is the one function that turns energy and a
  price into millisatoshi, and it rounds *down*: nobody is ever billed a fraction of a msat the tariff
  did not earn, so an invoice's implied rate never exceeds the advertised price (the car checks that
  before paying) and a session's cost never exceeds what the tariff says. The seller loses less than
  1 msat per priced tranche, which is negligible.
* **Physical estimates round toward the seller's safety.** Energy estimated from power (increment
  sizing, the projection of a charger that stopped reporting) rounds *up*, and the time until credit is
  used up rounds *down*: the estimate errs on the side of "more energy, sooner", so the power is cut a
  moment early rather than late. These estimates never reach a bill: cost is always priced from metered
  Wh through ``msat_for_energy``.
"""

from __future__ import annotations

from datetime import timedelta

WH_PER_KWH = 1000
SECONDS_PER_HOUR = 3600


def msat_for_energy(energy_wh: int, price_msat_per_kwh: int) -> int:
    """Price ``energy_wh`` at ``price_msat_per_kwh``, rounded down to a whole msat (toward the buyer)."""
    if energy_wh < 0 or price_msat_per_kwh < 0:
        raise ValueError("energy and price must be >= 0")
    return energy_wh * price_msat_per_kwh // WH_PER_KWH


def energy_wh_at_power(power_w: int, seconds: int) -> int:
    """Energy (Wh) that ``power_w`` delivers in ``seconds``, rounded up (toward the seller's safety)."""
    if power_w <= 0 or seconds <= 0:
        return 0
    return -(-power_w * seconds // SECONDS_PER_HOUR)


def energy_wh_over(power_w: int, interval: timedelta) -> int:
    """Energy (Wh) that ``power_w`` delivers over ``interval`` (to the microsecond), rounded up (toward the
    seller's safety): a projection checked every 100 ms must count every 100 ms, not whole seconds."""
    microseconds = interval // timedelta(microseconds=1)
    if power_w <= 0 or microseconds <= 0:
        return 0
    return -(-power_w * microseconds // (SECONDS_PER_HOUR * 1_000_000))


def seconds_to_deliver(energy_wh: int, power_w: int) -> int:
    """Whole seconds ``power_w`` takes to deliver ``energy_wh``, rounded down (toward the seller's safety).

    ``power_w`` must be > 0.
    """
    if power_w <= 0:
        raise ValueError("power_w must be > 0")
    return max(0, energy_wh) * SECONDS_PER_HOUR // power_w


def whole_seconds(interval: timedelta) -> int:
    """A time interval in whole seconds, rounded down (sub-second parts never count toward a deadline)."""
    return interval // timedelta(seconds=1)


def interpolate_seconds(total_seconds: int, part: int, whole: int) -> int:
    """``total_seconds * part / whole`` rounded down: where, in a sampling interval, a threshold was crossed.

    Rounding down places the crossing (e.g. "credit ran out") at or before its true time.
    """
    if whole <= 0:
        return 0
    return max(0, total_seconds) * max(0, part) // whole
