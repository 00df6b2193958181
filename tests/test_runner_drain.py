"""Reading Envoy's /stats for the requests still in flight while `tokenvoy run` drains it."""

from tokenvoy.runner.drain import active_requests

STATS = b"""cluster.rule/default.upstream_rq_active: 3
http.admin.downstream_rq_active: 1
http.ingress_http.downstream_rq_active: 2
http.other.downstream_rq_active: 1
http.ingress_http.downstream_rq_active_total: 9
listener.admin.downstream_cx_active: 1
"""


def test_active_requests_counts_every_listener_but_the_admins_own() -> None:
    assert active_requests(STATS) == 3


def test_no_request_in_flight() -> None:
    assert active_requests(b"http.admin.downstream_rq_active: 1\nhttp.ingress_http.downstream_rq_active: 0\n") == 0
