package nixdaemon

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/nixtest"
)

// recorder keeps what the daemon reported.
type recorder struct {
	msgs   []string
	builds map[uint64]string // build activity -> drv path
	lines  map[string][]string
}

func (r *recorder) Message(s string) { r.msgs = append(r.msgs, s) }
func (r *recorder) StartActivity(a Activity) {
	if a.Type == ActBuild && len(a.Fields) > 0 && a.Fields[0].IsStr {
		r.builds[a.ID] = a.Fields[0].Str
	}
}
func (r *recorder) StopActivity(uint64) {}
func (r *recorder) Result(id uint64, typ ResultType, f []Field) {
	if typ == ResBuildLogLine && len(f) == 1 {
		r.lines[r.builds[id]] = append(r.lines[r.builds[id]], f[0].Str)
	}
}

func newRecorder() *recorder {
	return &recorder{builds: map[uint64]string{}, lines: map[string][]string{}}
}

func startDaemon(t *testing.T) *Process {
	t.Helper()
	p, err := Start(exec.Command("nix-daemon", "--option", "substituters", "", "--stdio"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	require.NoError(t, p.SetOptions(Options{KeepGoing: true, Verbosity: LevelInfo, MaxBuildJobs: 1, MaxSilentTime: 1, BuildCores: 1}))
	return p
}

// TestBuildOverOneConnection builds one derivation after another over one
// real nix-daemon connection: outcomes, outputs and log lines per build,
// and a refused operation leaving the connection usable.
func TestBuildOverOneConnection(t *testing.T) {
	p := startDaemon(t)
	require.NotEmpty(t, p.NixVersion)
	tests := []struct {
		name, script string
		status       BuildStatus
		errHas       string
		line         string
	}{
		{"ok", `echo hello; echo to-stderr >&2; echo built > $out`, Built, "", "to-stderr"},
		{"broken", `echo about to fail; exit 3`, PermanentFailure, "failed with exit code 3", "about to fail"},
		{"silent", `echo going quiet; exec /bin/sleep 600`, TimedOut, "of silence", "going quiet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drv := nixtest.Derivation(t, "t", tt.script)
			rec := newRecorder()
			res, err := p.BuildPathsWithResults([]string{drv + "!*"}, Normal, rec)
			require.NoError(t, err)
			require.Len(t, res, 1)
			require.Equal(t, drv+"!*", res[0].Path)
			require.Equal(t, tt.status, res[0].Status, res[0].ErrorMsg)
			require.Contains(t, res[0].ErrorMsg, tt.errHas)
			require.Contains(t, rec.lines[drv], tt.line)
			if tt.status == Built {
				out := res[0].Outputs["out"]
				require.NotEmpty(t, out)
				data, err := os.ReadFile("/nix/store/" + strings.TrimPrefix(out, "/nix/store/"))
				require.NoError(t, err)
				require.Equal(t, "built\n", string(data))
				again, err := p.BuildPathsWithResults([]string{drv + "!*"}, Normal, newRecorder())
				require.NoError(t, err)
				require.Equal(t, AlreadyValid, again[0].Status)
			}
		})
	}
	// A GC root for an output, over the same connection.
	link := t.TempDir() + "/root"
	drv := nixtest.Derivation(t, "t", `echo x > $out`)
	res, err := p.BuildPathsWithResults([]string{drv + "!*"}, Normal, newRecorder())
	require.NoError(t, err)
	require.Equal(t, Built, res[0].Status)
	require.NoError(t, os.Symlink("/nix/store/"+strings.TrimPrefix(res[0].Outputs["out"], "/nix/store/"), link))
	require.NoError(t, p.AddIndirectRoot(link))
	// What the daemon refuses is a *DaemonError (it may end the connection
	// after one: see Conn).
	_, err = p.BuildPathsWithResults([]string{"/tmp/not-a-store-path.drv!*"}, Normal, newRecorder())
	require.True(t, IsDaemonError(err), "%v", err)
	require.ErrorContains(t, err, "not in the Nix store")
}

// TestOpenRefusesOtherPeers: a peer that is not a daemon, or speaks an
// older protocol, is refused with a clear error.
func TestOpenRefusesOtherPeers(t *testing.T) {
	u := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		return b
	}
	tests := []struct {
		name  string
		reply []byte
		want  string
	}{
		{"not a daemon", []byte("HTTP/1.1 400 Bad Request\r\n"), "not a nix daemon"},
		{"old", u(magic2, 1<<8|20), "need 1.34"},
		{"other major", u(magic2, 2<<8|34), "need 1.34"},
		{"cut", u(magic2), "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(tt.reply), io.Discard)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// FuzzBuildReply feeds anything as a daemon's reply to a build: the client
// returns an error or results, never panics, and keeps what it reads
// bounded (a list count or a string length is not an allocation size).
func FuzzBuildReply(f *testing.F) {
	hello := func() []byte {
		var b []byte
		for _, v := range []uint64{magic2, protocolVersion, 5} {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		b = append(b, "2.8.0\x00\x00\x00"...)
		return binary.LittleEndian.AppendUint64(b, stderrLast)
	}()
	u := binary.LittleEndian.AppendUint64
	f.Add(u(u(nil, stderrLast), 1<<40))
	f.Add(u(u(u(nil, stderrResult), 7), uint64(ResBuildLogLine)))
	f.Add(u(u(nil, stderrStartActivity), 1))
	f.Add(u(u(u(u(nil, stderrLast), 1), 1<<62), 0))
	f.Fuzz(func(t *testing.T, reply []byte) {
		c, err := Open(bytes.NewReader(append(append([]byte{}, hello...), reply...)), io.Discard)
		require.NoError(t, err)
		res, err := c.BuildPathsWithResults([]string{"/nix/store/x.drv!*"}, Normal, newRecorder())
		if err == nil {
			require.LessOrEqual(t, len(res), len(reply)/8)
		}
	})
}
