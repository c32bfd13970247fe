package cacheuploader

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"

	"nixbus.dev/nixbus/pkg/bus"
)

// Consumer is the durable consumer of cache-uploaders that upload what the
// named builders built (their outputs are in this host's store): one per
// set of builders, so that each host's uploaders see every result. No
// names: "cache-uploader", for all builds.
func Consumer(builders []string) string {
	const all = "cache-uploader"
	if len(builders) == 0 {
		return all
	}
	names := slices.Sorted(slices.Values(builders))
	h := sha256.Sum256([]byte(strings.Join(slices.Compact(names), "\x00")))
	return all + "-" + hex.EncodeToString(h[:6])
}

// Access is what a cache-uploader does on the bus: its role's permissions.
func Access() bus.Access {
	return bus.Access{
		// One durable per set of builders (Consumer).
		Consumes:  []bus.Durable{{Stream: bus.StreamRuns, Name: "*"}},
		Reads:     []string{bus.StreamRuns},
		Publishes: []string{bus.UploadAll},
	}
}
