"""tokenvoy's Envoy Rate Limit Service (RLS v3), compatible with envoyproxy/ratelimit's YAML config.

Modules, from pure core to adapters:

- ``config``: parse the YAML into an immutable descriptor tree (no I/O);
- ``limiter``: fixed-window arithmetic, ``plan`` -> counter ops and ``decide`` -> statuses (no I/O);
- ``backend`` / ``memory_backend`` / ``redis_backend``: where counters live (one batched call per
  request; Redis: one atomic Lua script, shared by every replica);
- ``metrics``: the Prometheus families; ``admin``: the HTTP port serving ``/metrics`` and ``/healthz``;
- ``service``: the grpc.aio ``ShouldRateLimit`` servicer, with the failure mode for unreachable counters;
- ``reload``: reading the config files, and reloading them on change or SIGHUP;
- ``server``: ``serve()`` and ``main()`` behind ``tokenvoy ratelimit``.

User documentation: ``docs/ratelimit.md``.

Nothing is imported here so that loading the config does not pull in gRPC.
"""
