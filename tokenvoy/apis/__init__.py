"""Catalogs of what tokenvoy speaks: the client APIs it serves and the backend schemas it reaches.

The lowest layer: pure data and tiny lookups, no I/O, importing nothing else of tokenvoy, so the config
loader, the renderer and extproc all read the same rows. Adding a client API or a backend schema starts
with a row here (docs/providers.md, "Adding a provider").
"""
