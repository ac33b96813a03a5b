"""The fleet gateway (`modelfleet gateway`): what edge devices talk to.

- `state`: the in-memory fleet view and the pure desired-state functions;
- `gateway`: enrolment, authentication, desired states, reports, bundle access (no HTTP);
- `app`: the FastAPI routes and the metrics port; `server`: the process;
- `backend`: the Kubernetes API or an in-memory stand-in; `bundles`: the artifact store;
- `writer`: batched, rate-limited EdgeDevice status writes; `metrics`: Prometheus; `http`: header parsing.
"""
