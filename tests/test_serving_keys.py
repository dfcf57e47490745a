"""A server's key type: serving_problems accepts exactly the keys grpc's TLS
serves with and its clients complete a handshake against, on a real grpc.aio
server and channel over TLS on loopback. cryptography reads every one of
them, so without this check a brainpool key passed, then failed at bind (at
start: "Failed to bind", at a rotation: silently kept the old certificate)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from poller.trust.serving import serving_problems

KEYS = {
    "rsa-2048": (lambda: rsa.generate_private_key(65537, 2048), hashes.SHA256),
    "ec-p256": (lambda: ec.generate_private_key(ec.SECP256R1()), hashes.SHA256),
    "ec-p384": (lambda: ec.generate_private_key(ec.SECP384R1()), hashes.SHA384),
    "ec-p521": (lambda: ec.generate_private_key(ec.SECP521R1()), hashes.SHA512),
    "ec-secp256k1": (lambda: ec.generate_private_key(ec.SECP256K1()), hashes.SHA256),
    "ec-brainpool": (lambda: ec.generate_private_key(ec.BrainpoolP256R1()), hashes.SHA256),
    "ed25519": (ed25519.Ed25519PrivateKey.generate, lambda: None),
    "ed448": (ed448.Ed448PrivateKey.generate, lambda: None),
}
SERVABLE = {"rsa-2048", "ec-p256", "ec-p384"}


def serving_pair(kind: str) -> tuple[bytes, bytes]:
    make_key, digest = KEYS[kind]
    key = make_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("gateway.test")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, digest())  # type: ignore[arg-type]
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


async def grpc_serves(chain: bytes, key: bytes) -> bool:
    """Whether a grpc.aio server binds with the pair and a grpc channel completes a call."""

    async def answer(request: bytes, context: object) -> bytes:
        return b"ok"

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("t.S", {"U": grpc.unary_unary_rpc_method_handler(answer)})]
    )
    try:
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, chain)]))
    except RuntimeError:  # "Failed to bind": the key did not load
        return False
    await server.start()
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}", grpc.ssl_channel_credentials(chain), options=[("grpc.ssl_target_name_override", "gateway.test")]
    )
    try:
        return await channel.unary_unary("/t.S/U")(b"x", timeout=10) == b"ok"
    except grpc.aio.AioRpcError:
        return False
    finally:
        await channel.close()
        await server.stop(None)


@pytest.mark.parametrize("kind", sorted(KEYS))
async def test_a_key_is_accepted_for_serving_exactly_when_grpc_serves_with_it(kind: str) -> None:
    chain, key = serving_pair(kind)
    problems = serving_problems(chain, key, where="gateway.pem")
    assert await grpc_serves(chain, key) is (kind in SERVABLE)
    if kind in SERVABLE:
        assert problems == []
    else:
        [problem] = problems
        assert problem.startswith("gateway.pem: grpc's TLS cannot serve with its key (")
        assert problem.endswith("); use RSA, EC P-256 or P-384")


def test_the_check_names_the_curve() -> None:
    chain, key = serving_pair("ec-brainpool")
    assert serving_problems(chain, key, where="gw.pem") == [
        "gw.pem: grpc's TLS cannot serve with its key (EC brainpoolP256r1); use RSA, EC P-256 or P-384"
    ]
