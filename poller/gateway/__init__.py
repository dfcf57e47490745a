"""The agent gateway: ServiceRadar's push agents dial in, are proven, and push.

Since upstream cac9ec1af the Go agent dials an agent gateway over mTLS and
calls `AgentGatewayService` (docs/protocol.md, push side): Hello, GetConfig, then
PushStatus every push interval (StreamStatus for large payloads; HEAD agents
also hold a ControlStream open). This package serves it with the same proof
as every server call (poller.server.TenantServerInterceptor: issuing tenant
CA found by key, CN grammar, CN tenant = CA tenant, SPIFFE agreement, CRL,
validity) and turns each pushed status into the same PollResult a poll
makes, delivered through the same HandlerRegistry and sinks.

API (for library users and the daemon):

- `PushEntry(name, tenant=, component=, partition=None, checks=(), interval=30.0)`:
  one agent allowed to push; `checks` are CheckConfig-shaped objects
  (service_type, service_name, details, port, results_interval).
- `PushRegistry(entries, accept_unlisted=False, default_interval=30.0)`:
  who may push; `.set_entries()` on reload; `.policy()` is the interceptor
  policy (`unknown_agent` for an identity no entry lists).
- `GatewayBounds(max_services=5000, max_status_bytes=4096,
  max_results_bytes=15 MiB, push_rate=1000.0, push_burst=10000,
  push_rate_per_agent=0.0 (none), push_burst_per_agent=0,
  max_calls_per_tenant=10000, max_calls_per_agent=64, max_connections=20000,
  max_connections_per_tenant=10000, connection_idle=300.0, stream_timeout=300.0,
  keepalive=120.0, keepalive_timeout=20.0)`.
- `AgentGateway(pushes=, delivery=, gateway_id=, partition="default",
  bounds=None, budget=None, trust=None, tracker=None, metrics=None)`: the
  servicer; `delivery` is a HandlerRegistry (deliver + flush), `budget` the
  ReassemblyBudget StreamStatus shares, `tracker` a PushTracker.
- `serve_gateway(gateway, trust, listen, chain, key) -> GatewayServer`
  (`.port`, `.stop()`): mTLS, client certificate required.
- `PushTracker`: per agent `PushRecord` (peer, last_push, last_outcome,
  open_streams); `state_of(entry, now=)` is pending / ok / unreachable (last
  push older than 2 intervals); `connected(entries, now=)` per tenant.
- `agent_checks(checks, interval=)` / `config_version(checks)`: the
  conversion below and its stable hash.

>>> pushes = PushRegistry([PushEntry("edge-1", tenant="acme-corp", component="agent-001", checks=checks)])  # doctest: +SKIP
>>> gateway = AgentGateway(pushes=pushes, delivery=registry, gateway_id="poller-1")  # doctest: +SKIP
>>> server = await serve_gateway(gateway, trust, "0.0.0.0:50052", "certs/gateway.pem", "certs/gateway-key.pem")  # doctest: +SKIP

Who may push, what each request must agree with
-----------------------------------------------
- The caller's proven identity must be the (tenant, component[, partition])
  of a push entry, else PERMISSION_DENIED `unknown_agent` (audited), unless
  accept_unlisted (any identity proven for a tenant with a CA; no checks;
  named `unlisted:<tenant>/<component>.<partition>`, a name no entry may take).
- `agent_id` of every request, chunk and status must be the proven component,
  `partition` (when set) the proven partition: else PERMISSION_DENIED
  `identity_mismatch`, audited.
- `tenant_slug` other than the proven tenant, or a `tenant_id` naming another
  tenant the gateway knows: PERMISSION_DENIED `payload_mismatch`, audited.
  Otherwise these fields decide nothing. `gateway_id` is ours (poller_id).
- Refusals by the proof itself are the interceptor's: UNAUTHENTICATED with
  the reason (`untrusted_chain`, `tenant_mismatch`, `revoked`, ...).
  Every refusal carries the reason code as trailing metadata
  `x-serviceradar-reason` and at the start of the status details.

Hello answers accepted, agent_id (the proven component), gateway_id,
server_time, heartbeat_interval_sec (the entry's interval), config_outdated
(the agent's config_version is not the current one), and tenant_id /
tenant_slug = the proven tenant's slug (cac9ec1af agents echo them; HEAD
agents skip these reserved numbers).
GetConfig answers the checks below with config_version (a hash of the
checks: it changes exactly when they change), or not_modified when the agent
already has that version.

The check mapping (config -> AgentCheckConfig)
----------------------------------------------
Every check: check_id `<service_type>/<service_name>`, name = service_name,
enabled, interval_sec = its results_interval or else the entry's interval,
timeout_sec = check_timeout(interval, checks): an equal share of half the
interval, 1 to 10 s (the agent runs its checks one after another before
each push).

=================  ==========  ===============================================  ====
service_type       check_type  target                                           port
=================  ==========  ===============================================  ====
port, tcp          port        details if "host:port", else "<details>:<port>"  port
                               (details empty: localhost)
grpc               grpc        as for port                                      port
icmp, ping         icmp        details (host or IP)                             port
http / https       http/https  details (URL or host)                            port
process            process     details (process name), else service_name        port
snmp               snmp        details                                          port
anything else      unchanged   details                                          port
=================  ==========  ===============================================  ====

(`tcp` becomes `port`: the Go agent has no "tcp" checker.) `unrunnable(check)`
says why the agent would drop a converted check or could not run it (a port
or grpc target without a port, a port check of an IPv6 address, a type it
has no checker for: http, https, anything not in AGENT_CHECKERS); config
parse warns of such checks of push entries (they are still sent).

Results
-------
Each GatewayServiceStatus becomes a PollResult: the proven TenantContext,
agent = the entry's name, address = the agent's peer address, poller_id =
gateway_id, kind "results" for the sources in RESULT_SOURCES ("results",
and the metrics streams of later agents such as "sysmon-metrics"), else
"status" (any other source up to 64 characters), agent_timestamp = the
request's timestamp; delivered through the HandlerRegistry (channels,
payload and label checks, sinks, outbox), then the
sinks are flushed before `received` is answered. StreamStatus chunks must
come in order (chunk_index 0, 1, ..., total_chunks consistent, is_final
last) and are held against the tenant's share of the ReassemblyBudget;
otherwise `incomplete_stream` and nothing of the stream is delivered. Every
push (PushStatus too) holds its bytes against that share until it is flushed.

Bounds (GatewayBounds; RESOURCE_EXHAUSTED `resource_exhausted`, counted in
poller_gateway_pushes_total): services per request or per stream, bytes per
status message (4 KiB) and per results payload (15 MiB), a per-tenant push
rate (token bucket) and calls in flight per tenant. A StreamStatus over the
budget is RESOURCE_EXHAUSTED `incomplete_stream` (a PushStatus,
`resource_exhausted`); one not final within
stream_timeout is DEADLINE_EXCEEDED `incomplete_stream`.

Long-lived calls (StreamStatus, ControlStream) end UNAUTHENTICATED when the
caller's identity stops holding (revoked, CA removed, expired): the
interceptor's watch (poller.server).
"""

from poller.gateway.bounds import GatewayBounds, TenantLimits
from poller.gateway.checks import CHECK_TYPES, agent_checks, check_type_for, config_version
from poller.gateway.liveness import STALE_INTERVALS, PushRecord, PushTracker
from poller.gateway.registry import PushEntry, PushPolicy, PushRegistry
from poller.gateway.server import GatewayServer, serve_gateway
from poller.gateway.service import AgentGateway, Deliverer

__all__ = [
    "CHECK_TYPES",
    "STALE_INTERVALS",
    "AgentGateway",
    "Deliverer",
    "GatewayBounds",
    "GatewayServer",
    "PushEntry",
    "PushPolicy",
    "PushRecord",
    "PushRegistry",
    "PushTracker",
    "TenantLimits",
    "agent_checks",
    "check_type_for",
    "config_version",
    "serve_gateway",
]
