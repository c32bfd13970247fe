#!/usr/bin/env bash
# Prints the path of a MinIO server binary for the S3 cache test (make test-s3),
# building it from the Go module proxy the first time (several minutes on two
# cores) into a cache directory that later runs reuse.
#   NIXBUS_MINIO_DIR  where the binary is kept (default ~/.cache/nixbus-minio)
#   NIXBUS_MINIO_VERSION  module version (default: the one this test was written against)
set -euo pipefail

dir=${NIXBUS_MINIO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nixbus-minio}
version=${NIXBUS_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
bin="$dir/$version/bin/minio"

if [ ! -x "$bin" ]; then
	echo "building minio $version into $dir (once; slow)" >&2
	mkdir -p "$dir/$version"
	# CGO off: a static binary that does not depend on this machine's libc.
	GOBIN="$dir/$version/bin.tmp" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
		go install "github.com/minio/minio@$version" >&2
	rm -rf "$dir/$version/bin"
	mv "$dir/$version/bin.tmp" "$dir/$version/bin"
fi
echo "$bin"
