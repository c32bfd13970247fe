#!/usr/bin/env bash
# Makes a Docker engine and Compose available for `make test-deploy` and
# `make images` on a Debian machine: installs Debian's docker.io and
# docker-compose (Compose v1, `docker-compose`) when missing, and starts
# dockerd when none answers. `scripts/docker-setup.sh stop` stops a dockerd
# this script started (its pid is kept in $CACHE/dockerd.pid).
set -euo pipefail

CACHE=${NIXBUS_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nixbus-deploy}
mkdir -p "$CACHE"
pidfile=$CACHE/dockerd.pid

if [ "${1:-}" = stop ]; then
	if [ -f "$pidfile" ]; then
		pid=$(cat "$pidfile")
		rm -f "$pidfile"
		if kill "$pid" 2>/dev/null; then
			for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.2; done
			echo "dockerd ($pid) did not stop" >&2
			exit 1
		fi
	fi
	exit 0
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
	need+=(docker-compose)
fi
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "make test-deploy needs: ${need[*]}. Install them as root: apt-get install ${need[*]}" >&2
		exit 1
	fi
	echo "installing ${need[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "no Docker engine answers and only root can start one" >&2
		exit 1
	fi
	echo "starting dockerd (log: $CACHE/dockerd.log)" >&2
	setsid dockerd >"$CACHE/dockerd.log" 2>&1 </dev/null &
	echo $! >"$pidfile"
	for _ in $(seq 1 300); do
		docker info >/dev/null 2>&1 && exit 0
		kill -0 "$(cat "$pidfile")" 2>/dev/null || break
		sleep 0.2
	done
	echo "dockerd did not come up:" >&2
	tail -20 "$CACHE/dockerd.log" >&2
	exit 1
fi
