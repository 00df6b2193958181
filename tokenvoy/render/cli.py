"""``tokenvoy render``: write the Envoy bootstrap and ratelimit config for a gateway config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import ConfigError, load_config, load_text
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.render.files import write_rendered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tokenvoy render",
        description=(
            "Render envoy.yaml and ratelimit.yaml for a gateway config (default: the embedded one, written "
            "to DIR/gateway.yaml for extproc). The Envoy config is built from envoy-data-plane's typed messages."
        ),
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="gateway config YAML (same as --config)")
    parser.add_argument("--config", action="append", default=[], metavar="FILE", help="gateway config; repeatable")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument(
        "--target",
        choices=("envoy", "envoy-gateway"),
        default="envoy",
        help="envoy: the Envoy bootstrap and ratelimit config (default); envoy-gateway: native Envoy Gateway "
        "manifests for Kubernetes (docs/envoy-gateway.md; options below marked EG)",
    )
    parser.add_argument("--namespace", help="EG: the namespace of every resource (default: the config's, else default)")
    parser.add_argument("--image", help="EG: the tokenvoy container image (default: tokenvoy:VERSION)")
    parser.add_argument("--gateway", help="EG: the Gateway routes without parentRefs attach to")
    parser.add_argument("--redis-url", help="EG: the Redis of Envoy Gateway's rate limit service, HOST:PORT")
    parser.add_argument(
        "--mode",
        choices=("native", "extension"),
        default="native",
        help="EG: native (extproc behind EG's EnvoyExtensionPolicy) or extension (tokenvoy's EG extension server "
        "and an extproc sidecar in EG's Envoy pods: fallback across providers; docs/envoy-gateway.md)",
    )
    parser.add_argument(
        "--proxy-namespace",
        default="envoy-gateway-system",
        help="EG extension mode: the namespace of EG's Envoy pods (default: %(default)s)",
    )
    parser.add_argument(
        "--extension-tls-secret",
        metavar="SECRET",
        help="EG extension mode: a kubernetes.io/tls Secret; EG reaches the extension server over TLS",
    )
    parser.add_argument(
        "--eg-ratelimit",
        choices=("eg", "tokenvoy"),
        default="eg",
        help="EG: the rate limit service of EG's ratelimit Deployment: EG's envoyproxy/ratelimit, or tokenvoy's "
        "ratelimit in its place (the EG config snippet patches image and command; docs/envoy-gateway.md)",
    )
    parser.add_argument("--extproc", default="127.0.0.1:1063", help="extproc address (default: %(default)s)")
    parser.add_argument("--ratelimit", default="127.0.0.1:8081", help="ratelimit address (default: %(default)s)")
    parser.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port (default: %(default)s)")
    parser.add_argument(
        "--reloadable",
        action="store_true",
        help="the layout `tokenvoy run` uses: listener, routes and backend clusters in DIR/xds/{lds,rds,cds}.yaml "
        "(filesystem xDS), so that re-rendering into DIR reconfigures a running Envoy (docs/reload.md)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    paths = [*args.files, *args.config]
    if args.target != "envoy-gateway" and (args.mode != "native" or args.extension_tls_secret):
        parser.error("--mode and --extension-tls-secret are for --target envoy-gateway")
    if args.target != "envoy-gateway" and args.eg_ratelimit != "eg":
        parser.error("--eg-ratelimit is for --target envoy-gateway")
    if args.target == "envoy-gateway":
        if args.reloadable:
            parser.error("--reloadable is for --target envoy (Envoy Gateway serves its own xDS)")
        from tokenvoy.render.gateway_cli import render_to_directory

        return render_to_directory(
            paths,
            out,
            namespace=args.namespace,
            image=args.image,
            redis_url=args.redis_url,
            gateway=args.gateway,
            mode=args.mode,
            proxy_namespace=args.proxy_namespace,
            extension_tls_secret=args.extension_tls_secret,
            eg_ratelimit=args.eg_ratelimit,
        )
    try:
        if paths:
            config = load_config(paths)
        else:
            text = default_config_yaml()
            out.mkdir(parents=True, exist_ok=True)
            (out / "gateway.yaml").write_text(text, encoding="utf-8")
            config = load_text(text, "<default>")
    except ConfigError as exc:
        print(f"tokenvoy render: invalid config:\n{exc}", file=sys.stderr)
        return 2
    options = EnvoyOptions(extproc_address=args.extproc, ratelimit_address=args.ratelimit, admin_port=args.admin_port)
    for path in write_rendered(config, out, options, reloadable=args.reloadable).values():
        print(path)
    return 0
