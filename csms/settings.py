"""satwatt's one settings object.

Every setting comes from an environment variable with the prefix ``CSMS_`` (``CSMS_DATABASE_URL``...),
optionally from a dotenv-style file named by ``CSMS_CONFIG_FILE``; the environment wins over the file.
Settings are validated once, at start-up: :func:`load_settings` raises :class:`SettingsError` whose
message names every bad setting by its environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CSMS_"


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it by its environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=Path("./satwatt-data"),
        description="Where the SQLite file, keys and generated credentials live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL: sqlite+aiosqlite:///path.db (default: a file in the data directory) "
        "or postgresql+asyncpg://user@host/db.",
    )
    auto_migrate: bool | None = Field(
        default=None,
        description="Run the database migrations at start-up (default: yes on SQLite, no on PostgreSQL).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The operator's bearer key for the REST API; generated on first start when unset.",
    )
    allow_unknown_chargers: bool = Field(
        default=False, description="Accept OCPP connections from charger ids that are not registered."
    )
    accept_unknown_id_tags: bool = Field(
        default=False, description="Authorize id tags that are not registered (testing only)."
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP/WebSocket server binds to.")
    port: int = Field(default=8180, ge=0, le=65535, description="Port of the HTTP/WebSocket server.")
    public_url: str | None = Field(
        default=None,
        description="How chargers, browsers and phone wallets reach this server, when behind a proxy "
        "(https for LNURL: wallets refuse plain http but for an onion service).",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate: serve wss:// and https://.")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")
    tls_client_ca: Path | None = Field(
        default=None,
        description="PEM CA bundle for charger client certificates (OCPP security profile 3): a charger "
        "presenting a certificate signed by it is admitted when the certificate's CN is its id.",
    )
    require_charger_certificate: bool = Field(
        default=False,
        description="Admit registered chargers only with a client certificate (needs CSMS_TLS_CLIENT_CA).",
    )
    require_charger_password: bool = Field(
        default=True,
        description="Refuse registered chargers that have no password (unless a client certificate "
        "identifies them).",
    )
    handshake_timeout_s: int = Field(
        default=10,
        ge=1,
        le=300,
        description="A connection must send its HTTP request headers, and a websocket must be admitted, "
        "within this time; otherwise it is closed.",
    )
    max_pending_connections_per_address: int = Field(
        default=64,
        ge=0,
        le=100_000,
        description="Connections from one client address that have not finished their handshake; more "
        "are answered 429 and closed (0: no bound).",
    )
    ocpp_max_message_bytes: int = Field(
        default=65536,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest OCPP-J frame accepted; larger frames are refused with a CALLERROR, up to a "
        "hard cap of 4x this (at least 1 MiB) above which the connection is closed with 1009.",
    )
    ocpp_call_timeout_s: int = Field(
        default=30, ge=1, le=600, description="How long satwatt waits for a charger's answer to a call."
    )
    heartbeat_interval_s: int = Field(
        default=300, ge=10, le=86400, description="Heartbeat interval given to chargers at boot."
    )
    meter_sample_interval_s: int = Field(
        default=10, ge=1, le=3600, description="Meter sample interval configured on chargers at boot."
    )
    ocpp_ping_interval_s: int = Field(
        default=30, ge=0, le=3600, description="WebSocket ping interval (0 disables pings)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    lightning_backend: Literal["simnet", "lnd"] = Field(
        default="simnet",
        description="simnet: start the embedded simulated Lightning network; lnd: use a real LND node.",
    )
    simnet_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the simnet's gRPC port binds to (0.0.0.0: every interface, e.g. in a container "
        "whose cars pay from outside).",
    )
    simnet_port: int = Field(default=10009, ge=0, le=65535, description="The simnet's gRPC port (0: any).")
    simnet_cars: int = Field(default=3, ge=0, le=1000, description="Payer nodes car1..carN in the simnet.")
    simnet_autopay_ms: int | None = Field(
        default=None,
        ge=0,
        le=3_600_000,
        description="Fleet benchmarks: the simnet's car1 pays every invoice of satwatt this many ms after "
        "its creation (unset: off).",
    )
    lnd_grpc: str | None = Field(default=None, description="LND gRPC host:port.")
    lnd_tls_cert: Path | None = Field(default=None, description="LND's tls.cert.")
    lnd_macaroon: Path | None = Field(default=None, description="An LND macaroon that can create invoices.")
    lnd_connect: SecretStr | None = Field(
        default=None, description="An lndconnect:// URI (instead of the three)."
    )
    remote_start_timeout_s: int = Field(
        default=120,
        ge=1,
        le=3600,
        description="How long a remote start may wait for its transaction (a car plugging in) before the "
        "session is given up, as chargers do after their ConnectionTimeOut.",
    )
    settlement_tick_ms: int = Field(
        default=1000, ge=20, le=60000, description="How often settlement checks every open session."
    )
    max_connector_power_w: int = Field(
        default=400_000,
        ge=1,
        le=2**31 - 1,
        description="The most power any connector delivers (W): a register step faster than this (plus "
        "meter_step_margin_wh) is an implausible reading, flagged and never billed; so is a power beyond it.",
    )
    meter_step_margin_wh: int = Field(
        default=1000,
        ge=0,
        le=10**9,
        description="Energy a register may move beyond max_connector_power_w x elapsed time (meter "
        "resolution: a register in whole kWh moves 1000 Wh at once).",
    )
    meter_max_wh: int = Field(
        default=10**11,
        ge=1,
        le=10**18,
        description="The highest register a meter can show (Wh); a register beyond it, or below 0, is "
        "implausible.",
    )
    clock_tolerance_s: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="How far a charger's timestamp may be ahead of satwatt's clock before its reading is "
        "flagged as from the future.",
    )

    nats_url: str | None = Field(
        default=None,
        description="Cluster mode: the NATS server(s) every satwatt process joins (nats://host:4222, several "
        "separated by commas); needs PostgreSQL and a shared Lightning node (CSMS_LIGHTNING_BACKEND=lnd).",
    )
    cluster_name: str = Field(
        default="satwatt",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="Cluster mode: the prefix of the NATS subjects and key-value buckets (several clusters "
        "can share one NATS).",
    )
    cluster_lease_s: int = Field(
        default=6,
        ge=2,
        le=300,
        description="Cluster mode: how long a process's liveness and the invoice-stream leader's lease last "
        "without renewal (renewed every third of it): the time to notice a dead process.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
                f"(got a URL with scheme {value.split(':', 1)[0]!r})"
            )
        return value

    @model_validator(mode="after")
    def _check_tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("CSMS_TLS_CERT and CSMS_TLS_KEY must be set together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self

    @model_validator(mode="after")
    def _check_client_ca(self) -> Settings:
        if self.tls_client_ca is not None:
            if self.tls_cert is None:
                raise ValueError(
                    "CSMS_TLS_CLIENT_CA needs CSMS_TLS_CERT and CSMS_TLS_KEY (client "
                    "certificates are checked in the TLS handshake)"
                )
            if not self.tls_client_ca.is_file():
                raise ValueError(f"TLS client CA file {self.tls_client_ca} does not exist")
        if self.require_charger_certificate and self.tls_client_ca is None:
            raise ValueError("CSMS_REQUIRE_CHARGER_CERTIFICATE needs CSMS_TLS_CLIENT_CA")
        return self

    @model_validator(mode="after")
    def _check_lnd(self) -> Settings:
        if self.lightning_backend != "lnd" or self.lnd_connect is not None:
            return self
        missing = [
            f"CSMS_{name.upper()}"
            for name in ("lnd_grpc", "lnd_tls_cert", "lnd_macaroon")
            if getattr(self, name) is None
        ]
        if missing:
            raise ValueError(
                "CSMS_LIGHTNING_BACKEND=lnd needs CSMS_LND_CONNECT or all of CSMS_LND_GRPC, "
                f"CSMS_LND_TLS_CERT, CSMS_LND_MACAROON (missing: {', '.join(missing)})"
            )
        for path in (self.lnd_tls_cert, self.lnd_macaroon):
            if path is not None and not path.is_file():
                raise ValueError(f"LND file {path} does not exist")
        return self

    @model_validator(mode="after")
    def _check_autopay(self) -> Settings:
        if self.simnet_autopay_ms is None:
            return self
        if self.lightning_backend != "simnet":
            raise ValueError("CSMS_SIMNET_AUTOPAY_MS needs CSMS_LIGHTNING_BACKEND=simnet")
        if self.simnet_cars < 1:
            raise ValueError("CSMS_SIMNET_AUTOPAY_MS needs CSMS_SIMNET_CARS >= 1 (car1 pays)")
        return self

    @model_validator(mode="after")
    def _check_cluster(self) -> Settings:
        if not self.nats_url:
            return self
        if not self.nats_url.startswith(("nats://", "tls://")) or any(
            not url.strip().startswith(("nats://", "tls://")) for url in self.nats_url.split(",")
        ):
            raise ValueError("CSMS_NATS_URL: each server must be nats://host:port or tls://host:port")
        if self.is_sqlite:
            raise ValueError(
                "CSMS_NATS_URL (cluster mode) needs PostgreSQL: set "
                "CSMS_DATABASE_URL=postgresql+asyncpg://... (SQLite is for one process on one machine)"
            )
        if self.lightning_backend != "lnd":
            raise ValueError(
                "CSMS_NATS_URL (cluster mode) needs one Lightning node shared by every process: set "
                "CSMS_LIGHTNING_BACKEND=lnd (a real LND, or a `lightning-simnet` running on its own)"
            )
        return self

    @property
    def cluster_mode(self) -> bool:
        return bool(self.nats_url)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'satwatt.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate


def _describe(error: dict[str, object]) -> str:
    location = [str(part) for part in error.get("loc", ()) if part != "__root__"]
    name = f"{ENV_PREFIX}{location[0].upper()}" if location else "settings"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{name}: {message}"


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raise SettingsError naming every bad one."""
    config_file = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    if config_file and not Path(config_file).is_file():
        raise SettingsError(f"{ENV_PREFIX}CONFIG_FILE: file {config_file} does not exist")
    try:
        return Settings(_env_file=config_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        lines = [_describe(dict(error)) for error in exc.errors()]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
