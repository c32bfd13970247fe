#!/usr/bin/env bash
# Builds, offline, the four images docker-compose.yml runs:
#   nixbus/nats:dev     FROM scratch: nats-server, the version go.mod pins
#   nixbus/jaeger:dev   FROM scratch: jaeger (all-in-one, v2) $JAEGER_VERSION
#   nixbus/nixbus:dev   FROM scratch: static nixbus (gerrit-ingest, planner, reporter)
#   nixbus/nix:dev      the host's Debian Nix, git and ssh + nixbus (evaluator,
#                       builders, cache-uploader); see scripts/deploy-rootfs.sh
# Binaries come from the Go module proxy and are kept under $CACHE, so that
# only the first run pays for Jaeger (~10 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${NIXBUS_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nixbus-deploy}
JAEGER_VERSION=v1.76.0
TAG=${NIXBUS_IMAGE_TAG:-dev}
mkdir -p "$CACHE"
export CGO_ENABLED=0

log() { printf 'deploy-images: %s\n' "$*" >&2; }

# nats-server at the version nixbus is tested against (go.mod).
nats_version=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
nats_bin=$CACHE/nats-server-$nats_version
if [ ! -x "$nats_bin" ]; then
	log "building nats-server $nats_version"
	go build -trimpath -ldflags='-s -w' -o "$nats_bin.tmp" github.com/nats-io/nats-server/v2
	mv "$nats_bin.tmp" "$nats_bin"
fi

# Jaeger needs a module of its own: v1.76.0 only builds with sarama pinned.
jaeger_bin=$CACHE/jaeger-$JAEGER_VERSION
if [ ! -x "$jaeger_bin" ]; then
	log "building jaeger $JAEGER_VERSION (slow the first time)"
	src=$CACHE/jaeger-src
	mkdir -p "$src"
	cat >"$src/go.mod" <<EOF
module nixbus.dev/deploy/jaeger

go 1.26.0

replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0
EOF
	printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/jaegertracing/jaeger/cmd/jaeger"\n' >"$src/tools.go"
	(cd "$src" && GOWORK=off GOFLAGS=-mod=mod go get "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" &&
		GOWORK=off go build -trimpath -ldflags='-s -w' -o "$jaeger_bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
	mv "$jaeger_bin.tmp" "$jaeger_bin"
fi

ctx=$CACHE/context
mkdir -p "$ctx"/{nats,jaeger,nixbus,nix}
go build -trimpath -o "$ctx/nixbus/nixbus" ./cmd/nixbus
cp "$ctx/nixbus/nixbus" "$ctx/nix/nixbus"
cp "$nats_bin" "$ctx/nats/nats-server"
cp "$jaeger_bin" "$ctx/jaeger/jaeger"
for d in nats jaeger nixbus; do
	rm -rf "$ctx/$d/tmp" && mkdir -m 1777 "$ctx/$d/tmp"
done

# The Nix root file system, rebuilt when the host's packages or the script change.
stamp=$( (dpkg-query -W nix-bin git openssh-client dash coreutils bash; cat scripts/deploy-rootfs.sh) | sha256sum | cut -c1-16)
if [ "$(cat "$ctx/nix/rootfs.stamp" 2>/dev/null)" != "$stamp" ]; then
	log "assembling the Nix root file system"
	scripts/deploy-rootfs.sh "$ctx/nix/rootfs"
	echo "$stamp" >"$ctx/nix/rootfs.stamp"
fi

cat >"$ctx/nats/Dockerfile" <<'EOF'
FROM scratch
COPY tmp /tmp
COPY nats-server /nats-server
ENTRYPOINT ["/nats-server"]
EOF
cat >"$ctx/jaeger/Dockerfile" <<'EOF'
FROM scratch
COPY tmp /tmp
COPY jaeger /jaeger
ENTRYPOINT ["/jaeger"]
EOF
cat >"$ctx/nixbus/Dockerfile" <<'EOF'
FROM scratch
COPY tmp /tmp
COPY nixbus /nixbus
ENV PATH=/
ENTRYPOINT ["/nixbus"]
EOF
cat >"$ctx/nix/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
COPY nixbus /usr/bin/nixbus
ENV PATH=/usr/bin HOME=/root USER=root
ENTRYPOINT ["/usr/bin/nixbus"]
EOF
for d in nats jaeger nixbus nix; do
	log "image nixbus/$d:$TAG"
	DOCKER_BUILDKIT=0 docker build -q -t "nixbus/$d:$TAG" "$ctx/$d" >/dev/null
done
