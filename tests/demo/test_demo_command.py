"""``csms demo`` as a user runs it: a subprocess on a free port with its own data directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_and_reports_sats_paid_and_a_suspension(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-data"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "csms",
            "demo",
            "--duration",
            "20",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # never touches ./satwatt-data of the checkout
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Demo summary" in done.stdout and "/docs" in done.stdout, output
    assert re.search(r"Dashboard\s+http://127\.0\.0\.1:\d+/dashboard", done.stdout), output
    assert re.search(r"Driver page\s+http://127\.0\.0\.1:\d+/c/DEMO-1/2", done.stdout), output
    summary = done.stdout[done.stdout.index("Demo summary") :]
    paid = re.search(r"sats paid\s+(\d+) \((\d+) invoices", summary)
    suspensions = re.search(r"suspensions\s+(\d+)", summary)
    sessions = re.search(r"sessions\s+(\d+)", summary)
    assert paid and suspensions and sessions, output
    assert int(paid.group(1)) > 0 and int(paid.group(2)) > 0
    assert int(suspensions.group(1)) >= 1
    assert int(sessions.group(1)) >= 4
    assert "Traceback" not in output
    assert not (tmp_path / "satwatt-data").exists()


def test_demo_fails_clearly_when_its_port_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "csms", "demo", "--duration", "5", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stdout and "--port" in done.stdout
