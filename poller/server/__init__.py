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

__all__ = [
    "REASON_METADATA_KEY",
    "Caller",
    "TenantServerInterceptor",
    "caller_still_holds",
    "current_caller",
    "prove_caller",
    "server_credentials",
]
