"""lndconnect URI parsing and LndConfig construction (paths, URI, environment)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from lightning.lnd import LndBackend, LndConfig, LndConfigError, parse_lndconnect
from lightning.simnet import Simnet
from lightning.simnet.tls import ensure_tls_cert

MACAROON = bytes.fromhex("0201036c6e640258030a10") + b"\x00" * 40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(PEM, DER) of a self-signed ECDSA cert like LND's."""
    d = tmp_path_factory.mktemp("cert")
    pem, _ = ensure_tls_cert(d / "tls.cert", d / "tls.key")
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    return pem, der


def test_parse_full_uri(cert: tuple[bytes, bytes]) -> None:
    _pem, der = cert
    uri = f"lndconnect://node.example.com:10011?cert={b64url(der)}&macaroon={b64url(MACAROON)}"
    parsed = parse_lndconnect(uri)
    assert (parsed.host, parsed.port, parsed.grpc_address) == (
        "node.example.com",
        10011,
        "node.example.com:10011",
    )
    assert parsed.macaroon == MACAROON
    assert parsed.tls_cert_pem is not None
    loaded = x509.load_pem_x509_certificate(parsed.tls_cert_pem)
    assert loaded.public_bytes(Encoding.DER) == der
    assert MACAROON.hex() not in repr(parsed)


def test_defaults_and_variants(cert: tuple[bytes, bytes]) -> None:
    _, der = cert
    no_port = parse_lndconnect(f"lndconnect://10.0.0.5?macaroon={b64url(MACAROON)}&cert={b64url(der)}")
    assert no_port.port == 10009 and no_port.grpc_address == "10.0.0.5:10009"
    no_cert = parse_lndconnect(f"lndconnect://host:1?macaroon={b64url(MACAROON)}")
    assert no_cert.tls_cert_pem is None  # a CA-signed cert: the system roots are used
    ipv6 = parse_lndconnect(f"lndconnect://[::1]:10009?macaroon={b64url(MACAROON)}")
    assert ipv6.host == "::1" and ipv6.grpc_address == "[::1]:10009"
    padded = base64.urlsafe_b64encode(MACAROON).decode()  # with '=' padding, percent-encoded
    assert parse_lndconnect(f"LNDCONNECT://h:1?macaroon={padded.replace('=', '%3D')}").macaroon == MACAROON
    standard = base64.b64encode(MACAROON + b"\xfb\xff").decode()  # '+' and '/' from standard base64
    assert parse_lndconnect(f"lndconnect://h:1?macaroon={standard}").macaroon == MACAROON + b"\xfb\xff"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("https://host:10009?macaroon=AgED", "not an lndconnect URI"),
        ("lndconnect://:10009?macaroon=AgED", "no host"),
        ("lndconnect://host:99999?macaroon=AgED", "invalid port"),
        ("lndconnect://host:10009", "macaroon"),
        ("lndconnect://host:10009?macaroon=", "macaroon"),
        ("lndconnect://host:10009?macaroon=AgED&macaroon=AgED", "exactly one"),
        ("lndconnect://host:10009?macaroon=%%%", "base64url"),
        ("lndconnect://host:10009?macaroon=AgED&cert=AAAA", "not a DER certificate"),
    ],
)
def test_invalid_uris(uri: str, message: str) -> None:
    with pytest.raises(LndConfigError, match=message):
        parse_lndconnect(uri)


def test_config_from_paths_and_env(tmp_path: Path, cert: tuple[bytes, bytes]) -> None:
    pem, der = cert
    (tmp_path / "tls.cert").write_bytes(pem)
    (tmp_path / "tls.der").write_bytes(der)
    (tmp_path / "admin.macaroon").write_bytes(MACAROON)
    (tmp_path / "hex.macaroon").write_text(MACAROON.hex() + "\n")
    config = LndConfig.from_paths("127.0.0.1:10009", tmp_path / "tls.cert", tmp_path / "admin.macaroon")
    assert config.tls_cert_pem == pem and config.macaroon == MACAROON
    assert MACAROON.hex() not in repr(config)
    from_der = LndConfig.from_paths("127.0.0.1:10009", tmp_path / "tls.der", tmp_path / "hex.macaroon")
    assert from_der.tls_cert_pem == pem and from_der.macaroon == MACAROON

    env = {
        "CSMS_LND_GRPC": "127.0.0.1:10009",
        "CSMS_LND_TLS_CERT": str(tmp_path / "tls.cert"),
        "CSMS_LND_MACAROON": str(tmp_path / "admin.macaroon"),
    }
    assert LndConfig.from_env(env) == config
    uri = f"lndconnect://lnd:10009?cert={b64url(der)}&macaroon={b64url(MACAROON)}"
    from_uri = LndConfig.from_env({**env, "CSMS_LND_CONNECT": uri})  # the URI wins
    assert from_uri.grpc_address == "lnd:10009" and from_uri.tls_cert_pem == pem
    with pytest.raises(LndConfigError, match="missing: CSMS_LND_MACAROON"):
        LndConfig.from_env({k: v for k, v in env.items() if k != "CSMS_LND_MACAROON"})
    with pytest.raises(LndConfigError, match="cannot read macaroon"):
        LndConfig.from_paths("127.0.0.1:10009", tmp_path / "tls.cert", tmp_path / "missing.macaroon")
    with pytest.raises(LndConfigError, match="host:port"):
        LndConfig.from_paths("localhost", tmp_path / "tls.cert", tmp_path / "admin.macaroon")


async def test_lndconnect_uri_of_the_simnet_connects(simnet: Simnet) -> None:
    uri = simnet.lndconnect_uri("car1")
    assert uri.startswith(f"lndconnect://{simnet.address}?cert=")
    backend = LndBackend(LndConfig.from_lndconnect(uri))
    try:
        info = await backend.get_info()
        assert info.alias == "car1" and info.pubkey == simnet.pubkey("car1")
    finally:
        await backend.close()


async def test_wrong_cert_is_rejected(simnet: Simnet, cert: tuple[bytes, bytes]) -> None:
    """TLS is verified against the given cert: another self-signed cert cannot connect."""
    pem, _ = cert
    good = LndConfig.from_simnet(simnet, "satwatt")
    from lightning.lnd import RetryPolicy

    backend = LndBackend(
        LndConfig(grpc_address=good.grpc_address, tls_cert_pem=pem, macaroon=good.macaroon),
        retry=RetryPolicy(initial_backoff_s=0.05, unavailable_timeout_s=0.3),
    )
    from lightning import BackendUnavailable

    try:
        with pytest.raises(BackendUnavailable):
            await backend.get_info()
        assert not backend.health.reachable
    finally:
        await backend.close()
