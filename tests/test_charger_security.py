"""Charger security: CSMS_REQUIRE_CHARGER_PASSWORD, OCPP security profile 3 (TLS client certificates
whose CN is the charger id), over real TLS with a CA and certificates made here."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ocpp.v201 import call as call201

from csms.settings import Settings
from tests.conftest import RunningServer, start_server
from tests.ocpp_clients import basic_auth, connect_charger
from tests.test_handshake import handshake_status


# ------------------------------------------------------------------------------------------ certificates
@dataclass
class Issued:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Issued(cert_path, key_path)


class CertificateAuthority:
    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = _write(directory, name, self.cert, self.key).cert

    def issue(self, cn: str, *, server: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        stem = f"{self.cert.subject.rfc4514_string()}-{cn}-{'server' if server else 'client'}"
        return _write(self.directory, stem.replace("=", "_"), cert, key)


@dataclass
class Pki:
    ca: CertificateAuthority
    server: Issued
    rogue_ca: CertificateAuthority

    def client_context(self, client: Issued | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.path))
        if client is not None:
            context.load_cert_chain(client.cert, client.key)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    ca = CertificateAuthority(directory, "satwatt-test-ca")
    return Pki(ca, ca.issue("localhost", server=True), CertificateAuthority(directory, "rogue-ca"))


@contextlib.asynccontextmanager
async def satwatt(database_url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[RunningServer]:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "simnet_port": 0,
        "simnet_cars": 0,
    }
    server, task, port = await start_server(Settings(**(values | settings)), "security-key")
    try:
        yield RunningServer(server.config.app.state.settings, server.config.app, "security-key", port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def register(api: httpx.AsyncClient, charger_id: str, password: str | None = None) -> None:
    body: dict[str, Any] = {"id": charger_id} | ({"password": password} if password else {})
    response = await api.post("/api/v1/chargers", json=body)
    assert response.status_code == 201, response.text


async def wss_status(url: str, context: ssl.SSLContext, headers: dict[str, str] | None = None) -> int:
    """The handshake's answer: 101 when admitted, else the refusal's status."""
    try:
        async with websockets.connect(
            url,
            ssl=context,
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            additional_headers=headers or {},
            open_timeout=20,
        ) as ws:
            assert ws.subprotocol == "ocpp2.0.1"
            return 101
    except websockets.InvalidStatus as refused:
        return refused.response.status_code


# ------------------------------------------------------------------------------------------ passwords
def test_passwords_are_required_by_default() -> None:
    assert Settings().require_charger_password is True


async def test_a_charger_without_password_is_refused_while_required(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with satwatt(database_url, tmp_path) as server, server.api() as api:
        await register(api, "CP-nopass")
        await register(api, "CP-pass", "a-good-password-1")
        url = f"{server.ocpp_url}/CP-nopass"
        assert await handshake_status(url) == 401
        assert await handshake_status(url, basic_auth("CP-nopass", "anything-at-all")) == 401
        async with connect_charger(server.ocpp_url, "CP-pass", "2.0.1", "a-good-password-1") as cp:
            assert (await cp.call(call201.Heartbeat())).current_time
        # once the operator sets a password, the charger connects with it
        patched = await api.patch("/api/v1/chargers/CP-nopass", json={"password": "now-it-has-one-1"})
        assert patched.status_code == 200
        async with connect_charger(server.ocpp_url, "CP-nopass", "2.0.1", "now-it-has-one-1") as cp:
            assert (await cp.call(call201.Heartbeat())).current_time
    # a refusal is an INFO line, never an ERROR (uvicorn logs one unless told the handshake is over)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("refused, it has no password" in r.getMessage() for r in caplog.records)


async def test_a_charger_without_password_connects_when_not_required(
    database_url: str, tmp_path: Path
) -> None:
    async with satwatt(database_url, tmp_path, require_charger_password=False) as server, server.api() as api:
        await register(api, "CP-open")
        async with connect_charger(server.ocpp_url, "CP-open", "2.0.1") as cp:
            assert (await cp.call(call201.Heartbeat())).current_time


# ------------------------------------------------------------------------------------------ profile 3
async def test_client_certificate_whose_cn_is_the_charger_id(
    database_url: str, tmp_path: Path, pki: Pki
) -> None:
    async with (
        satwatt(
            database_url,
            tmp_path,
            tls_cert=pki.server.cert,
            tls_key=pki.server.key,
            tls_client_ca=pki.ca.path,
        ) as server,
        httpx.AsyncClient(
            base_url=f"https://localhost:{server.port}",
            verify=pki.client_context(),
            headers={"Authorization": "Bearer security-key"},
        ) as api,
    ):
        # the REST API needs no client certificate
        await register(api, "CP-cert")  # no password: the certificate identifies it
        await register(api, "CP-both", "profile-2-password")
        url = f"wss://localhost:{server.port}/ocpp"
        own, others, rogue = pki.ca.issue("CP-cert"), pki.ca.issue("CP-both"), pki.rogue_ca.issue("CP-cert")
        assert await wss_status(f"{url}/CP-cert", pki.client_context(own)) == 101
        # a certificate naming another charger is refused, even with that charger's right password
        assert await wss_status(f"{url}/CP-both", pki.client_context(own)) == 401
        assert (
            await wss_status(
                f"{url}/CP-both", pki.client_context(own), basic_auth("CP-both", "profile-2-password")
            )
            == 401
        )
        # without a certificate: a password (profile 2) still works; no password, no entry
        assert await wss_status(f"{url}/CP-cert", pki.client_context()) == 401
        assert (
            await wss_status(
                f"{url}/CP-both", pki.client_context(), basic_auth("CP-both", "profile-2-password")
            )
            == 101
        )
        assert await wss_status(f"{url}/CP-both", pki.client_context(others)) == 101
        # a certificate from another CA fails the TLS handshake itself
        # (over TLS 1.2 the client learns it in the handshake, as an alert or a reset; over 1.3 only
        # when it reads the answer to its request)
        rogue_context = pki.client_context(rogue)
        rogue_context.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await wss_status(f"{url}/CP-cert", rogue_context)
        # the server is unharmed: the right certificate still gets in
        assert await wss_status(f"{url}/CP-cert", pki.client_context(own)) == 101


async def test_client_certificate_required(database_url: str, tmp_path: Path, pki: Pki) -> None:
    async with (
        satwatt(
            database_url,
            tmp_path,
            tls_cert=pki.server.cert,
            tls_key=pki.server.key,
            tls_client_ca=pki.ca.path,
            require_charger_certificate=True,
        ) as server,
        httpx.AsyncClient(
            base_url=f"https://localhost:{server.port}",
            verify=pki.client_context(),
            headers={"Authorization": "Bearer security-key"},
        ) as api,
    ):
        await register(api, "CP-strict", "a-password-too-1")
        url = f"wss://localhost:{server.port}/ocpp/CP-strict"
        auth = basic_auth("CP-strict", "a-password-too-1")
        assert await wss_status(url, pki.client_context(), auth) == 401
        assert await wss_status(url, pki.client_context(pki.ca.issue("CP-strict"))) == 101


def test_client_ca_settings_are_checked(tmp_path: Path, pki: Pki) -> None:
    from csms.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="CSMS_TLS_CLIENT_CA needs CSMS_TLS_CERT"):
        load_settings(tls_client_ca=pki.ca.path)
    with pytest.raises(SettingsError, match="CSMS_REQUIRE_CHARGER_CERTIFICATE needs CSMS_TLS_CLIENT_CA"):
        load_settings(require_charger_certificate=True)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tls_cert=pki.server.cert, tls_key=pki.server.key, tls_client_ca=tmp_path / "nope.pem")
