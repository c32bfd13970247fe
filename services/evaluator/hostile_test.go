package evaluator

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// hostileFlake writes a flake whose hydraJobs try to make the evaluator
// read files outside the store (a readable secret, /dev/zero, a path with
// ".."), claim outputs outside it, and hide jobs behind names that are not
// UTF-8 or hold control characters.
func hostileFlake(t *testing.T, secretFile string) string {
	t.Helper()
	dir := t.TempDir()
	const fakeOut = "/nix/store/00000000000000000000000000000000-fake"
	src := `{
  outputs = { self }:
    let
      salt = builtins.readFile ./salt.txt;
      job = name: builtins.derivation {
        inherit name salt; system = "x86_64-linux";
        builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; PATH = "/usr/bin:/bin";
      };
      fake = drvPath: out: { type = "derivation"; inherit drvPath; name = "fake"; system = "x86_64-linux";
        outputs = [ "out" ]; out = { outPath = out; }; outPath = out; };
      real = job "real";
    in {
      hydraJobs = {
        readSecret = fake "SECRET" "` + fakeOut + `";
        zero = fake "/dev/zero" "` + fakeOut + `";
        dotdot = fake "/nix/store/../..SECRET" "` + fakeOut + `";
        outputOutside = fake real.drvPath "/etc/passwd";
        "a<FD>" = job "a1";
        "a<FE>" = job "a2";
        "bell<BEL><ESC>[31mred" = job "bell";
        ok = real;
      };
    };
}`
	src = strings.NewReplacer("SECRET", secretFile, "<FD>", "\xfd", "<FE>", "\xfe", "<BEL>", "\a", "<ESC>", "\x1b").Replace(src)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(src), 0o644))
	salt := t.Name() + strconv.FormatInt(time.Now().UnixNano(), 10)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "salt.txt"), []byte(salt), 0o644))
	return dir
}

func TestHostileFlakeIsContained(t *testing.T) {
	secretDir := t.TempDir()
	secretFile := filepath.Join(secretDir, "gerrit-password")
	const secret = "hunter2-do-not-leak"
	require.NoError(t, os.WriteFile(secretFile, []byte(secret+"\n"), 0o644))
	dir := hostileFlake(t, secretFile)

	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	start(t, js, testConfig(t), Deps{})
	ev := &nixbuspb.ChangeEvent{EventId: t.Name(), Kind: nixbuspb.ChangeEvent_KIND_MANUAL, Project: "p", LocalPath: dir}
	publishEvent(t, js, ev, bus.MsgIDChange(ev.EventId))
	r := waitEvaluated(t, js, bus.RunID(ev.EventId))
	requireOneRun(t, r)
	require.Empty(t, r.done[0].GetError())

	names := make([]string, 0, len(r.jobs))
	for name := range r.jobs {
		names = append(names, name)
	}
	require.ElementsMatch(t, []string{"readSecret", "zero", "dotdot", "outputOutside", `"a\xfd"`, `"a\xfe"`, `"bell\x07\x1b[31mred"`, "ok"}, names,
		"every attribute is a job of its own, under a printable name")
	require.Equal(t, 8, r.jobMsgs)
	require.EqualValues(t, 8, r.done[0].GetJobCount())

	for _, name := range []string{"readSecret", "zero", "dotdot", "outputOutside"} {
		j := r.jobs[name]
		require.Contains(t, j.GetEvalError(), "refuses", name)
		require.Empty(t, j.GetDrvPath(), name)
		require.Empty(t, j.GetOutputs(), name)
	}
	for _, name := range []string{`"a\xfd"`, `"a\xfe"`, "ok"} {
		require.Empty(t, r.jobs[name].GetEvalError(), name)
		require.NotEmpty(t, r.jobs[name].GetDrvPath(), name)
	}
	require.NotEqual(t, r.jobs[`"a\xfd"`].GetDrvPath(), r.jobs[`"a\xfe"`].GetDrvPath())

	for _, j := range r.jobs {
		data, err := proto.Marshal(j)
		require.NoError(t, err)
		require.NotContains(t, string(data), secret)
		for _, s := range append([]string{j.GetAttr(), j.GetEvalError(), j.GetName()}, j.GetAttrPath()...) {
			require.True(t, utf8.ValidString(s))
		}
		require.NotContains(t, j.GetAttr()+j.GetEvalError(), "\x1b")
		require.NotContains(t, j.GetAttr()+j.GetEvalError(), "\a")
	}
}
