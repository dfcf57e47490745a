"""Server side: a grpc.aio interceptor that proves and authorizes each caller's tenant.

>>> trust = TrustStore("certs", require_client=False)  # doctest: +SKIP
>>> server = grpc.aio.server(interceptors=[TenantServerInterceptor(trust, policies={...})])  # doctest: +SKIP
>>> server.add_secure_port("0.0.0.0:50061", server_credentials(trust, chain_pem, key_pem))  # doctest: +SKIP
"""

from poller.server.credentials import server_credentials
from poller.server.interceptor import (
    REASON_METADATA_KEY,
    Caller,
    TenantServerInterceptor,
    caller_still_holds,
    current_caller,
    prove_caller,
)
from poller.server.read_after_proof import READ_AFTER_PROOF_OPTIONS, ReadAfterProof, unary_read_after_proof

__all__ = [
    "READ_AFTER_PROOF_OPTIONS",
    "REASON_METADATA_KEY",
    "Caller",
    "ReadAfterProof",
    "TenantServerInterceptor",
    "caller_still_holds",
    "current_caller",
    "prove_caller",
    "server_credentials",
    "unary_read_after_proof",
]
