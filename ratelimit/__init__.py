"""tokenvoy's Envoy Rate Limit Service (RLS v3), compatible with envoyproxy/ratelimit's YAML config.

Modules, from pure core to adapters:

- ``config``: parse the YAML into an immutable descriptor tree (no I/O);
- ``limiter``: fixed-window arithmetic, ``plan`` -> counter ops and ``decide`` -> statuses (no I/O);
- ``backend`` / ``memory_backend``: where counters live (one batched call per request);
- ``service``: the grpc.aio ``ShouldRateLimit`` servicer;
- ``server``: ``serve()`` and ``main()`` behind ``tokenvoy ratelimit``.

Nothing is imported here so that loading the config does not pull in gRPC.
"""
