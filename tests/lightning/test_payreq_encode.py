"""The simnet's own BOLT11 encoder against the ``bolt11`` package (an independent implementation)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

import bolt11
import coincurve
import pytest
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags
from bolt11.models.features import Feature, Features, FeatureState

from lightning import InvalidRequest
from lightning.lnd import LndBackend
from lightning.payreq import decode_payreq, encode_payreq, payment_hash_of
from lightning.simnet import Simnet

CASES = [
    # amount_msat, description, description_hash, expiry_s, cltv
    (3_000, "cycle 1", b"", 600, 80),
    (0, "", b"", 86_400, 80),  # any amount, empty description
    (1, "x" * 639, b"", 365 * 24 * 3600, 2016),  # 0.1-msat unit, LND's longest memo
    (5, "", hashlib.sha256(b"terms").digest(), 1, 9),  # description hash instead of a description
    (12_345, "é ⚡ 30 Wh", b"", 3_600, 40),  # UTF-8
    (2**32 - 1, "max", b"", 60, 18),
    (100_000_000_000, "one bitcoin", b"", 60, 18),  # whole BTC: no multiplier
]


def _reference(key: coincurve.PrivateKey, ph: bytes, ps: bytes, case: tuple, date: int) -> str:
    amount, description, description_hash, expiry, cltv = case
    tags = Tags()
    tags.add(TagChar.payment_hash, ph.hex())
    tags.add(TagChar.payment_secret, ps.hex())
    if description_hash:
        tags.add(TagChar.description_hash, description_hash.hex())
    else:
        tags.add(TagChar.description, description)
    tags.add(TagChar.expire_time, expiry)
    tags.add(TagChar.min_final_cltv_expiry, cltv)
    features = {
        Feature.var_onion_optin: FeatureState.required,
        Feature.payment_secret: FeatureState.required,
        Feature.basic_mpp: FeatureState.supported,
    }
    tags.add(TagChar.features, Features.from_feature_list(features))
    invoice = Bolt11(
        currency="bcrt", date=date, tags=tags, amount_msat=MilliSatoshi(amount) if amount else None
    )
    return str(bolt11.encode(invoice, key.secret.hex()))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}msat")
def test_encoding_is_the_bolt11_package_s_byte_for_byte(case: tuple) -> None:
    key = coincurve.PrivateKey(secrets.token_bytes(32))
    ph, ps, date = secrets.token_bytes(32), secrets.token_bytes(32), 1_764_500_000
    amount, description, description_hash, expiry, cltv = case
    ours = encode_payreq(
        key,
        payment_hash=ph,
        payment_secret=ps,
        amount_msat=amount,
        timestamp=date,
        description=description,
        description_hash=description_hash,
        expiry_s=expiry,
        min_final_cltv_expiry=cltv,
    )
    # RFC 6979 signatures are deterministic: same fields, same order -> the very same string.
    assert ours == _reference(key, ph, ps, case, date)
    decoded = bolt11.decode(ours)  # checks the checksum and the signature
    assert decoded.payee == key.public_key.format(compressed=True).hex()  # recovered from the signature
    assert decoded.currency == "bcrt" and decoded.date == date
    assert decoded.payment_hash == ph.hex() and decoded.payment_secret == ps.hex()
    assert int(decoded.amount_msat or 0) == amount
    assert decoded.expiry == expiry and decoded.min_final_cltv_expiry == cltv
    if description_hash:
        assert decoded.description_hash == description_hash.hex() and decoded.description is None
    else:
        assert decoded.description == description
    assert payment_hash_of(ours) == ph


def test_bad_fields_are_refused() -> None:
    key = coincurve.PrivateKey(secrets.token_bytes(32))
    good = dict(payment_hash=bytes(32), payment_secret=bytes(32), amount_msat=1, timestamp=1, expiry_s=1)
    with pytest.raises(ValueError, match="32 bytes"):
        encode_payreq(key, **{**good, "payment_hash": b"short"}, min_final_cltv_expiry=18)
    with pytest.raises(ValueError, match="non-negative"):
        encode_payreq(key, **{**good, "amount_msat": -1}, min_final_cltv_expiry=18)
    with pytest.raises(ValueError, match="unknown network"):
        encode_payreq(key, **good, min_final_cltv_expiry=18, network="dogecoin")
    with pytest.raises(ValueError, match="1023 words"):
        encode_payreq(key, **good, min_final_cltv_expiry=18, description="x" * 700)


async def test_simnet_invoices_decode_with_the_node_as_payee(seller: LndBackend, simnet: Simnet) -> None:
    invoice = await seller.create_invoice(30_000, "30 Wh at 1 sat/Wh", expiry_s=900)
    decoded = bolt11.decode(invoice.bolt11)
    assert decoded.payee == simnet.pubkey("satwatt")
    assert bytes.fromhex(decoded.payment_hash) == invoice.payment_hash
    assert int(decoded.amount_msat) == 30_000 and decoded.description == "30 Wh at 1 sat/Wh"
    assert decoded.expiry == 900 and decoded.min_final_cltv_expiry == 80
    assert decoded.date == int(invoice.created_at.timestamp())
    features = decoded.features.feature_list if decoded.features else {}
    assert features[Feature.payment_secret] is FeatureState.required
    assert features[Feature.var_onion_optin] is FeatureState.required
    assert features[Feature.basic_mpp] is FeatureState.supported


def _foreign(
    key: coincurve.PrivateKey, currency: str, amount: int, *, payee: bool, extra_tags: bool, cltv: bool
) -> str:
    """An invoice written by the bolt11 package, with fields our encoder never writes."""
    tags = Tags()
    tags.add(TagChar.payment_hash, secrets.token_bytes(32).hex())
    tags.add(TagChar.payment_secret, secrets.token_bytes(32).hex())
    tags.add(TagChar.description, "foreign ⚡")
    if payee:
        tags.add(TagChar.payee, key.public_key.format(compressed=True).hex())
    if cltv:
        tags.add(TagChar.min_final_cltv_expiry, 144)
    if extra_tags:
        tags.add(TagChar.expire_time, 7)
        tags.add(TagChar.metadata, "01fafaf0")  # an unknown field to a reader: skipped
    invoice = Bolt11(
        currency=currency, date=1_600_000_000, tags=tags, amount_msat=MilliSatoshi(amount) if amount else None
    )
    return str(bolt11.encode(invoice, key.secret.hex(), keep_payee=payee))


@pytest.mark.parametrize("currency", ["bc", "tb", "tbs", "bcrt"])
@pytest.mark.parametrize("payee", [False, True])
@pytest.mark.parametrize("extra", [False, True])
def test_decode_agrees_with_the_bolt11_package(currency: str, payee: bool, extra: bool) -> None:
    key = coincurve.PrivateKey(secrets.token_bytes(32))
    for amount in (0, 1, 10, 2_500, 100_000_000_000, 123_456_789_012):
        text = _foreign(key, currency, amount, payee=payee, extra_tags=extra, cltv=extra)
        ref = bolt11.decode(text)
        ours = decode_payreq(text)
        assert ours.payment_hash.hex() == ref.payment_hash
        assert ours.amount_msat == int(ref.amount_msat or 0) == amount
        assert ours.payee == ref.payee == key.public_key.format(compressed=True).hex()
        assert ours.description == ref.description
        assert int(ours.created_at.timestamp()) == ref.date
        assert int(ours.expires_at.timestamp()) == ref.date + ref.expiry
        assert ours.min_final_cltv_expiry == ref.min_final_cltv_expiry
        assert decode_payreq(text.upper()) == ours  # BOLT11 strings may be all upper case


def _recheck(text: str, mutate: Callable[[list[int]], list[int]] = list, hrp: str | None = None) -> str:
    """Change the data words (or the prefix) of a BOLT11 string and give it a valid checksum again."""
    from bech32 import bech32_decode, bech32_encode

    old_hrp, words = bech32_decode(text)
    assert old_hrp is not None and words is not None
    return str(bech32_encode(hrp or old_hrp, mutate(list(words))))


def test_decode_refuses_what_is_not_a_valid_invoice() -> None:
    key = coincurve.PrivateKey(secrets.token_bytes(32))
    text = _foreign(key, "bcrt", 3_000, payee=True, extra_tags=False, cltv=True)

    def flip_timestamp(words: list[int]) -> list[int]:
        words[3] ^= 1
        return words

    tampered = _recheck(text, flip_timestamp)  # checksum fine, signature no longer the payee's
    with pytest.raises(Exception):  # noqa: B017  (the reference raises its own exception type)
        bolt11.decode(tampered)
    with pytest.raises(InvalidRequest, match="not signed by its payee"):
        decode_payreq(tampered)
    with pytest.raises(InvalidRequest, match="checksum"):
        decode_payreq(text[:-1] + ("q" if text[-1] != "q" else "p"))
    with pytest.raises(InvalidRequest, match="mixed case"):
        decode_payreq(text[:10].upper() + text[10:])
    with pytest.raises(InvalidRequest, match="unknown prefix"):
        decode_payreq(_recheck(text, hrp="lnxyz30n"))
    with pytest.raises(InvalidRequest, match="whole msat"):
        decode_payreq(_recheck(text, hrp="lnbcrt1p"))
    with pytest.raises(InvalidRequest, match="too short"):
        decode_payreq(_recheck(text, lambda w: w[:50]))
    for garbage in ("", "lnbcrt1garbage", "bitcoin:xyz", "lnbcrt1" + "q" * 20):
        with pytest.raises(InvalidRequest):
            decode_payreq(garbage)
