"""Logging of websocket-layer events that are the client's fault, not the server's.

uvicorn closes a websocket whose text frame is not valid UTF-8 with 1007, as RFC 6455 requires, but
logs it as an ERROR with a full traceback (``logger.exception`` in its websockets-sansio protocol):
a fuzzing or broken charger then fills the log with tracebacks that are not server errors. The filter
here turns exactly that record into one WARNING line naming the connection; every other record of
uvicorn's passes unchanged, so real errors keep their tracebacks.
"""

from __future__ import annotations

import logging


class InvalidUtf8AsOneLine(logging.Filter):
    """Rewrites uvicorn's "Invalid UTF-8 sequence received from client." ERROR into one WARNING line."""

    MESSAGE = "Invalid UTF-8 sequence received from client."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE or record.levelno != logging.ERROR:
            return True
        record.msg = "%s: websocket closed with 1007: a text frame was not valid UTF-8"
        record.args = (self._connection(record),)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True

    @staticmethod
    def _connection(record: logging.LogRecord) -> str:
        """The path and address of the connection, read from the protocol object that logged the
        record (the ``self`` of the frame that caught the UnicodeDecodeError), else ``?``."""
        traceback = record.exc_info[2] if record.exc_info else None
        protocol = traceback.tb_frame.f_locals.get("self") if traceback is not None else None
        scope = getattr(protocol, "scope", None)
        path = scope.get("path", "?") if isinstance(scope, dict) else "?"
        client = getattr(protocol, "client", None)
        address = f"{client[0]}:{client[1]}" if isinstance(client, tuple) and len(client) == 2 else "?"
        return f"{path} from {address}"


def install_websocket_log_filters() -> None:
    """Add the filter to uvicorn's error logger (once, however often it is called)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, InvalidUtf8AsOneLine) for f in logger.filters):
        logger.addFilter(InvalidUtf8AsOneLine())
