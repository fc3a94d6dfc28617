"""Shared by the benchmarks: `csms serve` as a subprocess, and its fleet set up through the REST API.

`start_satwatt` runs `.venv/bin/csms serve` (the interpreter running this script) on a free port with a
fresh data directory (SQLite, or the database given), the embedded Lightning simnet on a free port and
a fixed operator key; its output goes to `serve.log` in the data directory. `register_chargers`,
`create_payer` and `session_summary` speak the REST API the way an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
API_KEY = "sw_bench-operator-key-not-secret"
CHARGER_PASSWORD = "bench-charger-password-16+"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SatwattServer:
    """A `csms serve` process; `restart` and `kill` keep the data directory and the port."""

    data_dir: Path
    port: int
    database_url: str | None = None
    env_extra: dict[str, str] = field(default_factory=dict)
    tree: Path = REPO  # the source tree whose csms runs (see export_revision)
    launcher: list[str] = field(default_factory=lambda: ["-m", "csms"])  # python <launcher> serve
    serve_args: list[str] = field(default_factory=list)  # after `serve`, e.g. ["--workers", "2"]
    process: asyncio.subprocess.Process | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ocpp(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "CSMS_DATA_DIR": str(self.data_dir),
            "CSMS_PORT": str(self.port),
            "CSMS_API_KEY": API_KEY,
            "CSMS_LIGHTNING_BACKEND": "simnet",
            "CSMS_SIMNET_PORT": "0",
            "CSMS_SIMNET_CARS": "1",
            "CSMS_LOG_LEVEL": "WARNING",
            "GRPC_VERBOSITY": "ERROR",
            "PYTHONPATH": str(self.tree),
        }
        if self.database_url:
            env["CSMS_DATABASE_URL"] = self.database_url
        env.update(self.env_extra)
        return env

    async def start(self, timeout_s: float = 90.0) -> None:
        """Start (or start again) and wait until /healthz answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = os.open(self.data_dir / "serve.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *self.launcher,
                "serve",
                *self.serve_args,
                cwd=self.tree,
                env=self.env(),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            os.close(log)
        async with asyncio.timeout(timeout_s), httpx.AsyncClient() as client:
            while True:
                with contextlib.suppress(httpx.TransportError, ValueError):
                    reply = await client.get(f"{self.http}/healthz")
                    if reply.status_code == 200 and self.ready(reply.json()):
                        return
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"csms serve exited during start-up; see {self.data_dir / 'serve.log'}:\n"
                        + self.log_tail()
                    )
                await asyncio.sleep(0.2)

    def ready(self, health: dict[str, Any]) -> bool:
        """Whether a /healthz that answers 200 with ``health`` means started (a subclass may wait longer)."""
        return True

    async def kill(self) -> None:
        """kill -9, as a crash would (its process group: a `serve --workers` supervisor and its workers)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(20):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.data_dir / "serve.log").read_text(errors="replace").splitlines()[-lines:])
        return ""


async def export_revision(revision: str, dest: Path) -> str:
    """Write the files of a git revision of this repository into ``dest``; returns the commit.

    So a benchmark can run satwatt as committed (e.g. ``HEAD``, before uncommitted work in the tree).
    """
    show = await asyncio.create_subprocess_exec(
        "git",
        "-C",
        str(REPO),
        "rev-parse",
        "--verify",
        f"{revision}^{{commit}}",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await show.communicate()
    if show.returncode != 0:
        raise RuntimeError(f"no such revision: {revision}")
    commit = out.decode().strip()
    os.makedirs(dest, exist_ok=True)
    archive = await asyncio.create_subprocess_shell(
        f"git -C '{REPO}' archive {commit} | tar -x -C '{dest}'", stderr=asyncio.subprocess.PIPE
    )
    _, err = await archive.communicate()
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {commit} failed: {err.decode(errors='replace')}")
    # byte-compile it, as an installed satwatt would be: with PYTHONDONTWRITEBYTECODE set (as here) every
    # start, the restart of a storm included, would otherwise compile csms from source (seconds)
    compile_all = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "compileall", "-q", str(dest / "csms"), stdout=asyncio.subprocess.DEVNULL
    )
    await compile_all.wait()
    return commit


async def migrate(database_url: str, tree: Path = REPO) -> None:
    """`csms migrate` on a PostgreSQL database (SQLite migrates at start-up)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "csms",
        "migrate",
        cwd=tree,
        env={**os.environ, "CSMS_DATABASE_URL": database_url, "PYTHONPATH": str(tree)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"csms migrate failed: {output.decode(errors='replace')[-2000:]}")


def operator(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=httpx.Timeout(120.0)
    )


async def register_chargers(
    client: httpx.AsyncClient, ids: list[str], password: str | None = CHARGER_PASSWORD, concurrency: int = 4
) -> None:
    """Register every charger, with a password unless None (POST /api/v1/chargers, a few at a time)."""
    queue = list(reversed(ids))

    async def worker() -> None:
        while queue:
            charger_id = queue.pop()
            body = {"id": charger_id} if password is None else {"id": charger_id, "password": password}
            reply = await client.post("/api/v1/chargers", json=body)
            if reply.status_code not in (201, 409):
                raise RuntimeError(f"registering {charger_id}: {reply.status_code} {reply.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def create_payer(
    client: httpx.AsyncClient, id_tags: list[str], name: str = "bench fleet"
) -> dict[str, Any]:
    """A payer owning the id tags: every session started with one of them is sold to it."""
    reply = await client.post("/api/v1/payers", json={"name": name, "id_tags": id_tags})
    if reply.status_code != 201:
        raise RuntimeError(f"creating the payer: {reply.status_code} {reply.text[:300]}")
    return dict(reply.json())


async def patch_default_tariff(client: httpx.AsyncClient, **fields: int) -> dict[str, Any]:
    """Change the `default` tariff (every charger's unless assigned another) for new sessions."""
    tariffs = (await client.get("/api/v1/tariffs")).json()
    default = next(t for t in tariffs if t["name"] == "default")
    reply = await client.patch(f"/api/v1/tariffs/{default['id']}", json=fields)
    if reply.status_code != 200:
        raise RuntimeError(f"changing the default tariff: {reply.status_code} {reply.text[:300]}")
    return dict(reply.json())


async def session_summary(client: httpx.AsyncClient) -> dict[str, Any]:
    """Sessions by state, how many were sold, energy and msat billed (the newest 100,000 sessions)."""
    states: Counter[str] = Counter()
    sold = billed = energy = with_invoice = 0
    offset = 0
    while offset < 100_000:
        reply = await client.get("/api/v1/sessions", params={"limit": 1000, "offset": offset})
        reply.raise_for_status()
        page = reply.json()
        for session in page:
            states[session["state"]] += 1
            sold += bool(session.get("sold"))
            billed += session.get("billed_msat") or 0
            with_invoice += bool(session.get("billed_msat"))
            energy += session.get("energy_wh") or 0
        if len(page) < 1000:
            break
        offset += 1000
    return {
        "sessions": sum(states.values()),
        "by_state": dict(states),
        "sold": sold,
        "invoiced": with_invoice,
        "billed_msat": billed,
        "energy_wh": energy,
    }
