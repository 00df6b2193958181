#!/usr/bin/env bash
# Local stand-ins for the images docker-compose.yaml and the Dockerfile name but that no registry here serves:
#   base        the Dockerfile's FROM (python:3.11-slim): a minimal Debian bookworm with python3 and pip,
#               built with debootstrap and loaded with `docker import` under that tag
#   prometheus  Debian's prometheus package, run like prom/prometheus (entrypoint /usr/bin/prometheus, user nobody)
#   redis       Debian's redis-server, run like the redis image (entrypoint runs the command, no protected mode)
# Each is built only when its tag is missing. Usage: images.sh base TAG | prometheus TAG BASE | redis TAG BASE
set -euo pipefail

have() { docker image inspect "$1" >/dev/null 2>&1; }

base() {
  local tag=$1 root
  have "$tag" && { echo "   $tag: present"; return; }
  local start=$SECONDS
  command -v debootstrap >/dev/null || { echo "debootstrap is missing" >&2; exit 1; }
  root=$(mktemp -d /tmp/tokenvoy-base.XXXXXX)
  trap 'rm -rf "$root"' RETURN
  debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  # The host's extra CAs (a TLS-inspecting proxy, a company CA): pip inside `docker build` must trust them too.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  # Like python:3.11-slim: `python` on PATH, pip may install into the system interpreter, no caches or docs.
  ln -sf python3 "$root/usr/bin/python"
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/* "$root"/root/.cache
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} +
  tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
  echo "   $tag: built (debootstrap bookworm + python3, pip) in $((SECONDS - start)) s"
}

# A Debian package on the base image; policy-rc.d keeps its maintainer scripts from starting the service.
from_debian() {
  local tag=$1 base=$2 package=$3 tail=$4 start=$SECONDS
  have "$tag" && { echo "   $tag: present"; return; }
  local out
  out=$(DOCKER_BUILDKIT=0 docker build -t "$tag" - 2>&1 <<DOCKERFILE
FROM $base
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $package \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /usr/share/doc/* /usr/share/man/* /var/log/apt
$tail
DOCKERFILE
) || { echo "$out" | tail -30 >&2; echo "building $tag failed" >&2; exit 1; }
  echo "   $tag: built (Debian's $package on $base) in $((SECONDS - start)) s"
}

case "${1:-}" in
  base) base "$2" ;;
  prometheus)
    from_debian "$2" "$3" prometheus '
RUN mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' ;;
  redis)
    # The redis image turns protected mode off (a container is reached through its network, never loopback).
    from_debian "$2" "$3" redis-server '
RUN printf '"'"'#!/bin/sh\nif [ "$1" = redis-server ]; then shift; exec redis-server --protected-mode no "$@"; fi\nexec "$@"\n'"'"' >/usr/local/bin/entrypoint \
 && chmod +x /usr/local/bin/entrypoint
USER redis
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/entrypoint"]
CMD ["redis-server"]' ;;
  *) echo "usage: $0 base TAG | prometheus TAG BASE | redis TAG BASE" >&2; exit 2 ;;
esac
