#!/usr/bin/env bash
# Assembles, in the directory $1, the root file system of the nixbus-nix
# image (evaluator, builders, cache-uploader): the host's Debian Nix
# (nix-bin), git, ssh, a shell and coreutils for builders, and every shared
# library they load. Nothing is downloaded: it is the host's own files, so
# the image runs what this machine runs. The Nix store itself is not in the
# image; compose mounts a volume at /nix.
set -euo pipefail

out=${1:?usage: deploy-rootfs.sh OUT-DIR}
rm -rf "$out"
mkdir -p "$out"

# Debian is merged-/usr: /bin, /lib, /lib64 and /sbin are links into /usr.
mkdir -p "$out"/usr/{bin,sbin,lib,lib64} "$out"/etc/nix "$out"/etc/ssl/certs "$out"/root "$out"/nix "$out"/var/lib/nixbus "$out"/srv/flakes
for d in bin lib lib64 sbin; do ln -s usr/$d "$out/$d"; done
mkdir -m 1777 "$out/tmp" "$out/var/tmp"

usrmerge() { sed -E 's#^/(bin|sbin|lib|lib64)/#/usr/\1/#'; }

# copy reads paths on stdin and copies them under $out in one tar pass,
# links as links, together with what each link points to.
copy() {
	local list
	list=$(mktemp)
	usrmerge | sort -u >"$list"
	tr '\n' '\0' <"$list" | xargs -0 readlink -f | usrmerge | sort -u >>"$list"
	sort -u "$list" | sed 's#^/##' | tar -C / --no-recursion -cf - --files-from=- | tar -C "$out" -xf -
	rm -f "$list"
}

# The packages' own files, without documentation.
dpkg -L nix-bin git openssh-client dash coreutils bash grep sed tar gzip xz-utils findutils |
	grep -Ev '^/usr/share/(doc|man|info|locale|lintian|bash-completion|zsh|fish|perl5)(/|$)' |
	while read -r f; do if [ -f "$f" ] || [ -L "$f" ] || [ -d "$f" ]; then printf '%s\n' "$f"; fi; done | copy
# /bin/sh is dash, as on the host (builders run "/bin/sh -c").
ln -sf dash "$out/usr/bin/sh"

# Every library an executable or library in the tree loads, and the loader.
find "$out" -type f \( -perm -u+x -o -name '*.so*' \) -print0 | xargs -0 file -F '|' | grep ELF | cut -d'|' -f1 |
	tr '\n' '\0' | xargs -0 ldd 2>/dev/null | grep -o '/[^ ]*' | grep -v ':$' | sort -u |
	{ cat; echo /lib64/ld-linux-x86-64.so.2; ls /usr/lib/x86_64-linux-gnu/libnss_{dns,files}.so.2; } | copy
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"

cat >"$out/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$out/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo 'hosts: files dns' >"$out/etc/nsswitch.conf"
# Single-user Nix as root, no build users, no sandbox (containers cannot
# nest one); substituters come from NIX_CONFIG (see docker-compose.yml).
cat >"$out/etc/nix/nix.conf" <<'EOF'
build-users-group =
sandbox = false
experimental-features = nix-command flakes
EOF
