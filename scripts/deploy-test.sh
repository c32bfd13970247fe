#!/usr/bin/env bash
# `make test-deploy`: the composed system end to end. Starts a Docker engine
# if none runs (and stops it again afterwards), builds the images offline,
# then runs deploy/compose_test.go: docker-compose up with three builders,
# the example flake triggered by hand, its verdict, review, log link and
# Jaeger trace checked, everything torn down.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${NIXBUS_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nixbus-deploy}
export NIXBUS_DEPLOY_CACHE=$CACHE
started=
[ -f "$CACHE/dockerd.pid" ] || started=1
scripts/docker-setup.sh
if [ -n "$started" ] && [ -f "$CACHE/dockerd.pid" ]; then
	trap 'scripts/docker-setup.sh stop' EXIT
fi
scripts/deploy-images.sh

# Compose v2 (`docker compose`) where installed, else Debian's v1.
if [ -z "${NIXBUS_COMPOSE:-}" ]; then
	if docker compose version >/dev/null 2>&1; then NIXBUS_COMPOSE="docker compose"; else NIXBUS_COMPOSE=docker-compose; fi
fi
export NIXBUS_COMPOSE
go test -tags deploy -count=1 -timeout 30m -v -run 'TestCompose' ./deploy/
