"""The device agent: what runs on edge devices (no torch, no Kubernetes client).

`trust` decides which desired states and bundles the agent may act on (pure: bytes in, verdicts out);
`errors` holds its two error trees (bad data versus transport). The fetcher, the install state machine and the
runtimes are not built yet.
"""
