package nixbuild

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestArgs(t *testing.T) {
	tests := []struct {
		name string
		n    Nix
		want []string
	}{
		{"local", Nix{MaxSilentTime: 1200 * time.Second},
			[]string{"-L", "--keep-going", "--max-silent-time", "1200", "--json", "--out-link", "/w/r/x", "/nix/store/x.drv"}},
		{"remote only", Nix{MaxSilentTime: 90 * time.Second, RemoteOnly: true},
			[]string{"-L", "--keep-going", "--max-silent-time", "90", "--max-jobs", "0", "--json", "--out-link", "/w/r/x", "/nix/store/x.drv"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.n.Args("/nix/store/x.drv", "/w/r/x"))
		})
	}
}

func TestFirstLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"error: builder for '/nix/store/a-x.drv' failed with exit code 1", "builder for '/nix/store/a-x.drv' failed with exit code 1"},
		{"error: builder for '/nix/store/a-x.drv' failed with exit code 1;\n       last 10 log lines:\n  > boom", "builder for '/nix/store/a-x.drv' failed with exit code 1"},
		{"\x1b[31;1merror:\x1b[0m builder for '\x1b[35;1m/nix/store/a-x.drv\x1b[0m' failed with exit code 2;\n  > boom", "builder for '/nix/store/a-x.drv' failed with exit code 2"},
		{"  something else\nmore", "something else"},
		{"", ""},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, FirstLine(tt.in), tt.in)
	}
}

func TestParseOutputs(t *testing.T) {
	out, err := parseOutputs([]byte(`[{"drvPath":"/nix/store/a-x.drv","outputs":{"out":"/nix/store/b-x","dev":"/nix/store/c-x-dev"}}]`), "/nix/store/a-x.drv")
	require.NoError(t, err)
	require.Equal(t, map[string]string{"out": "/nix/store/b-x", "dev": "/nix/store/c-x-dev"}, out)
	_, err = parseOutputs([]byte(`[{"drvPath":"/nix/store/other.drv","outputs":{"out":"/nix/store/b"}}]`), "/nix/store/a-x.drv")
	require.Error(t, err)
	_, err = parseOutputs(nil, "/nix/store/a-x.drv")
	require.Error(t, err)
}

func TestTail(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	_, err = f.WriteString(strings.Repeat("x", 100) + "error: the end\n")
	require.NoError(t, err)
	require.Equal(t, "error: the end\n", Tail(f, 15))
	require.Len(t, Tail(f, 1000), 115)
}

func TestLimitedWriter(t *testing.T) {
	var b bytes.Buffer
	w := &limitedWriter{w: &b, n: 5}
	n, err := w.Write([]byte("abc"))
	require.NoError(t, err)
	require.Equal(t, 3, n)
	n, err = w.Write([]byte("defgh"))
	require.NoError(t, err)
	require.Equal(t, 5, n)
	require.Equal(t, "abcde", b.String())
}
