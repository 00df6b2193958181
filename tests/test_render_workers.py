"""``tokenvoy run --extproc-workers N``: the extproc cluster and filters Envoy gets, and the runner's layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import load_text
from tokenvoy.contract import (
    AI_GATEWAY_METADATA_NAMESPACE,
    ATTEMPT_METADATA_NAMESPACE,
    EXTPROC_CLUSTER,
    REQUEST_METADATA_NAMESPACE,
)
from tokenvoy.render.bootstrap import render_bootstrap
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.runner.run import envoy_options
from tokenvoy.runner.workers import MAX_DEFAULT_WORKERS, default_workers, extproc_workers

CONFIG = load_text(default_config_yaml({}), "<default>")
WORKERS = ("unix:/run/t/extproc-0.sock", "unix:/run/t/extproc-1.sock")


def _bootstrap(workers: tuple[str, ...]) -> dict:
    options = EnvoyOptions("unix:/run/t/extproc.sock", "unix:/run/t/ratelimit.sock", extproc_worker_addresses=workers)
    return render_bootstrap(CONFIG, options)


def _extproc_filters(bootstrap: dict) -> tuple[dict, dict]:
    resources = bootstrap["static_resources"]
    hcm = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    router = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
    cluster = next(c for c in resources["clusters"] if c["name"].startswith("rule/"))
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    upstream = next(f for f in options["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
    return router, upstream


def _cluster(bootstrap: dict) -> dict:
    return next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == EXTPROC_CLUSTER)


def test_one_worker_keeps_one_endpoint_and_the_identity_attributes() -> None:
    bootstrap = _bootstrap(())
    cluster = _cluster(bootstrap)
    assert len(cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 1
    assert "health_checks" not in cluster and "load_balancing_policy" not in cluster
    router, upstream = _extproc_filters(bootstrap)
    assert "forwarding_namespaces" not in router["metadata_options"]
    assert "request_body_mode" not in upstream["processing_mode"]  # NONE: the edit goes back with the headers
    assert "connection.id" in upstream["request_attributes"]


def test_several_workers_are_endpoints_picked_by_fewest_streams_and_health_checked() -> None:
    cluster = _cluster(_bootstrap(WORKERS))
    paths = [
        e["endpoint"]["address"]["pipe"]["path"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert paths == ["/run/t/extproc-0.sock", "/run/t/extproc-1.sock"]
    policy = cluster["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.least_request"
    assert policy["typed_config"]["selection_method"] == "FULL_SCAN"
    assert "grpc_health_check" in cluster["health_checks"][0]
    outliers = cluster["outlier_detection"]  # a worker that died is left out at its first refused connection
    assert outliers["split_external_local_origin_errors"] and outliers["consecutive_local_origin_failure"] == 1


def test_several_workers_carry_the_request_state_in_forwarded_metadata() -> None:
    router, upstream = _extproc_filters(_bootstrap(WORKERS))
    assert router["metadata_options"]["receiving_namespaces"]["untyped"] == [
        AI_GATEWAY_METADATA_NAMESPACE,
        REQUEST_METADATA_NAMESPACE,
    ]
    assert router["metadata_options"]["forwarding_namespaces"]["untyped"] == [ATTEMPT_METADATA_NAMESPACE]
    assert upstream["metadata_options"]["receiving_namespaces"]["untyped"] == [
        AI_GATEWAY_METADATA_NAMESPACE,
        ATTEMPT_METADATA_NAMESPACE,
    ]
    forwarded = upstream["metadata_options"]["forwarding_namespaces"]["untyped"]
    assert forwarded == [REQUEST_METADATA_NAMESPACE, ATTEMPT_METADATA_NAMESPACE]
    assert upstream["processing_mode"]["request_body_mode"] == "BUFFERED"  # the client's body, on every attempt
    assert "request_attributes" not in router  # no identity needed: no registry
    assert len(upstream["request_attributes"]) == 1  # the endpoint Envoy picked


def test_the_runner_names_one_socket_per_worker(tmp_path: Path) -> None:
    assert [w.listen for w in extproc_workers(tmp_path, 1)] == [f"unix:{tmp_path / 'extproc.sock'}"]
    several = extproc_workers(tmp_path, 3)
    assert [w.name for w in several] == ["extproc 0", "extproc 1", "extproc 2"]
    assert envoy_options(tmp_path, 9901, extproc_workers=3).extproc_worker_addresses == tuple(w.listen for w in several)
    assert envoy_options(tmp_path, 9901, extproc_workers=1).extproc_worker_addresses == ()
    with pytest.raises(ValueError, match="at least 1"):
        extproc_workers(tmp_path, 0)


def test_the_default_is_one_worker_per_core_capped() -> None:
    assert default_workers(1) == 1
    assert default_workers(2) == 2
    assert default_workers(64) == MAX_DEFAULT_WORKERS


def test_the_shared_metrics_registry_is_only_there_in_multiprocess_mode(tmp_path: Path) -> None:
    from tokenvoy.extproc.server import MULTIPROCESS_ENV, multiprocess_registry
    from tokenvoy.runner.workers import fresh_metrics_dir

    assert multiprocess_registry({}) is None
    directory = fresh_metrics_dir(tmp_path)
    (directory / "stale.db").write_bytes(b"")
    assert not (fresh_metrics_dir(tmp_path) / "stale.db").exists()  # a reused run directory starts empty
    registry = multiprocess_registry({MULTIPROCESS_ENV: str(directory)})
    assert registry is not None and list(registry.collect()) == []  # no worker wrote anything yet
