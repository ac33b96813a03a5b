"""The device agent: what runs on edge devices (no torch, no Kubernetes client, no kopf).

`trust` decides which desired states and bundles the agent may act on (pure: bytes in, verdicts out);
`errors` holds its two error trees (bad data versus transport); `client` fetches from the fleet gateway (stdlib
HTTP, Range resume); `store` is the state directory (atomic writes, symlink switch, recovery); `smoke` runs a
bundle's golden set in the runtime, in a child process; `loop` is the agent (`modelfleet agent`); `metrics` its
/metrics; `command` its command-line arguments.
"""
