"""GPIO lines through the kernel's character device (libgpiod v2 bindings) or the legacy sysfs interface.

``gpiod`` (``pip install 'satwatt[board]'``) is imported only by :class:`GpiodLine`, so a board without it
(or this test machine) runs every other driver.  :class:`SysfsLine` needs nothing but the files under
``/sys/class/gpio`` (its root is configurable, so tests point it at a temporary directory).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


class GpioError(Exception):
    """A GPIO line could not be set up, written or read."""


class GpiodLine:
    """One line of a GPIO chip, requested as an output (with its initial level) or an input."""

    def __init__(self, chip: str, line: int | str, *, output: bool, initial: bool = False) -> None:
        try:
            import gpiod  # type: ignore[import-not-found,unused-ignore]
            from gpiod.line import Direction, Value  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise GpioError(
                "the gpiod driver needs the libgpiod Python bindings: install them into the shim's venv "
                "with `.venv/bin/pip install -c constraints.txt -e '.[board]'` (or use driver = \"sysfs\")"
            ) from None
        self._value = Value
        path = chip if chip.startswith("/") else f"/dev/{chip}"
        self.line = line
        settings = gpiod.LineSettings(
            direction=Direction.OUTPUT if output else Direction.INPUT,
            output_value=Value.ACTIVE if initial else Value.INACTIVE,
        )
        try:
            self._request: Any = gpiod.request_lines(path, consumer="satwatt-shim", config={line: settings})
        except (OSError, ValueError) as e:
            raise GpioError(f"cannot request line {line!r} of {path}: {e}") from None

    def write(self, level: bool) -> None:
        try:
            self._request.set_value(self.line, self._value.ACTIVE if level else self._value.INACTIVE)
        except OSError as e:
            raise GpioError(f"cannot set line {self.line!r}: {e}") from None

    def read(self) -> bool:
        try:
            return bool(self._request.get_value(self.line) == self._value.ACTIVE)
        except OSError as e:
            raise GpioError(f"cannot read line {self.line!r}: {e}") from None

    def close(self) -> None:
        self._request.release()


class SysfsLine:
    """``/sys/class/gpio/gpioN``: exported if it is not yet, direction set, ``value`` written and read."""

    EXPORT_WAIT_S = 2.0  # udev may take a moment to make the new files writable by the gpio group

    def __init__(self, root: Path, gpio: int, *, output: bool, initial: bool = False) -> None:
        self.root = root
        self.gpio = gpio
        self.dir = root / f"gpio{gpio}"
        try:
            if not self.dir.exists():
                (root / "export").write_text(str(gpio))
            deadline = time.monotonic() + self.EXPORT_WAIT_S
            while True:
                try:
                    # "high"/"low" set an output and its level at once (no glitch); "in" an input
                    (self.dir / "direction").write_text(("high" if initial else "low") if output else "in")
                    break
                except (FileNotFoundError, PermissionError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        except OSError as e:
            raise GpioError(f"cannot set up GPIO {gpio} under {root}: {e}") from None

    def write(self, level: bool) -> None:
        try:
            (self.dir / "value").write_text("1" if level else "0")
        except OSError as e:
            raise GpioError(f"cannot write GPIO {self.gpio}: {e}") from None

    def read(self) -> bool:
        try:
            return self.read_value(self.dir)
        except OSError as e:
            raise GpioError(f"cannot read GPIO {self.gpio}: {e}") from None

    @staticmethod
    def read_value(directory: Path) -> bool:
        text = (directory / "value").read_text().strip()
        if text not in ("0", "1"):
            raise GpioError(f"{directory / 'value'} holds {text!r}, not 0 or 1")
        return text == "1"

    def close(self) -> None:
        """The line stays exported (and at its last level): unexporting would let it float."""
