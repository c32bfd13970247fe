package nixbuild

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTransientReason classifies what real nix 2.8 `nix build -L
// --keep-going --json` runs printed (testdata/*.txt, captured on this
// project's Debian nix 2.8.0 with per-capture nonces; the remote-builder
// one with --max-jobs 0 --builders 'ssh://nobody@127.0.0.1:1 x86_64-linux',
// the full store one with --store on a 2 MiB tmpfs). Only infrastructure
// failures are transient; a build's own failure never is, even when the
// build prints nix's words.
func TestTransientReason(t *testing.T) {
	for _, tt := range []struct {
		file, want string
	}{
		{"exit-code.txt", ""},
		{"silence.txt", ""},
		{"timeout.txt", ""},
		{"forged-markers.txt", ""},
		{"signal-9.txt", "builder killed"},
		{"fod-download.txt", "download error"},
		{"remote-connect.txt", "lost connection to a remote builder"},
		{"store-full.txt", "store out of space"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			require.NoError(t, err)
			require.Equal(t, tt.want, TransientReason(string(data)))
		})
	}
	// Not produced here: nix's SysError for ENOSPC on a store write, as
	// libutil's writeFull throws it ("writing to file" + strerror).
	require.Equal(t, "store out of space", TransientReason("error: writing to file: No space left on device\n"))
	// A colour-coded nix line still counts; an indented one (the rest of
	// an error message) too.
	require.Equal(t, "download error", TransientReason("\x1b[31;1merror:\x1b[0m unable to download 'https://x/y': HTTP error 503\n"))
}
