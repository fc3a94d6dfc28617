"""``python -m csms.healthcheck``: exit 0 when the satwatt of these settings answers /healthz with 200.

For container health checks (the Dockerfile's HEALTHCHECK): it reads the same settings as ``csms serve``
(CSMS_PORT, CSMS_TLS_CERT...), so the check follows the port and the scheme the server really uses.
The server is asked at CSMS_HOST (the loopback address when it binds every interface); with TLS its
certificate is not verified (it is itself).
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from csms.settings import SettingsError, load_settings

TIMEOUT_S = 4.0


def check() -> tuple[bool, str]:
    """Whether satwatt is healthy, and a line saying what was found."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        return False, f"unhealthy: {exc}"
    if settings.port == 0:
        return False, "unhealthy: CSMS_PORT=0 (any free port): no fixed port to check"
    scheme = "https" if settings.tls_cert else "http"
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{settings.port}/healthz"
    context = None
    if settings.tls_cert:  # satwatt asking itself: its own certificate need not be verified
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            return response.status == 200, f"{url}: {response.status}"
    except urllib.error.HTTPError as exc:  # 503: the database is unavailable
        return False, f"unhealthy: {url}: {exc.code}"
    except OSError as exc:
        return False, f"unhealthy: {url}: {exc}"


def main() -> None:
    healthy, line = check()
    print(line, file=sys.stdout if healthy else sys.stderr)
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
