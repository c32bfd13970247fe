#!/usr/bin/env bash
# Installs what nixbus needs on a Debian machine with Go: Nix (Debian's
# nix-bin, single-user, sandbox off), protoc, git and ssh. Does nothing when
# they exist.
set -euo pipefail

need=()
command -v nix >/dev/null 2>&1 || need+=(nix-bin)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v git >/dev/null 2>&1 || need+=(git)
# git fetches Gerrit changes over ssh (the evaluator, and its tests).
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "nixbus needs: ${need[*]}. Install them as root: apt-get install ${need[*]}" >&2
		exit 1
	fi
	echo "installing ${need[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# nixbus passes --extra-experimental-features itself; the store must be
# usable by this user without a daemon (single-user) and with no sandbox,
# which containers cannot provide.
if [ "$(id -u)" -eq 0 ] && [ -f /etc/nix/nix.conf ] && ! grep -q '^experimental-features' /etc/nix/nix.conf; then
	printf 'experimental-features = nix-command flakes\n' >>/etc/nix/nix.conf
fi
if [ "$(id -u)" -eq 0 ] && [ -f /etc/nix/nix.conf ] && ! grep -q '^sandbox' /etc/nix/nix.conf; then
	printf 'sandbox = false\n' >>/etc/nix/nix.conf
fi
if ! nix --extra-experimental-features 'nix-command flakes' store ping >/dev/null 2>&1; then
	echo "nix cannot open its store as $(id -un); run as root or set up a single-user Nix" >&2
	exit 1
fi
