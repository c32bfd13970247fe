package nix

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCappedKeepsHeadAndTail(t *testing.T) {
	for _, tc := range []struct {
		name    string
		writes  []string
		want    string
		dropped int64
	}{
		{"fits", []string{"ab", "cd"}, "abcd", 0},
		{"head and tail", []string{"0123456789"}, "012\n[... 3 bytes left out ...]\n6789", 3},
		{"small writes", []string{"01", "23", "45", "67", "89"}, "012\n[... 3 bytes left out ...]\n6789", 3},
		{"one big write after a small one", []string{"0123", "abcdefghij"}, "012\n[... 7 bytes left out ...]\nghij", 7},
		{"tail only", []string{"012", "x"}, "012x", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCapped(3, 4)
			for _, w := range tc.writes {
				n, err := c.Write([]byte(w))
				require.NoError(t, err)
				require.Equal(t, len(w), n)
			}
			require.Equal(t, tc.want, c.String())
			require.Equal(t, tc.dropped, c.Dropped())
		})
	}
}

// A nix that prints far more to stderr than is kept fails with its error
// message, and what is kept stays within the caps.
func TestRunKeepsStderrBounded(t *testing.T) {
	n := &Nix{}
	// 32 MiB of trace lines, then an error.
	expr := `builtins.trace (builtins.concatStringsSep "\n" (builtins.genList (i: "trace line number ${toString i} ......................................") 400000)) (throw "the real error")`
	_, err := n.Output(t.Context(), []string{"eval"}, "--expr", expr)
	var ne *Error
	require.ErrorAs(t, err, &ne)
	require.LessOrEqual(t, len(ne.Stderr), StderrHead+StderrTail+100)
	require.Contains(t, ne.Error(), "the real error")
}

// Cancelling the context kills the child's whole process group, not only
// the child.
func TestCancelKillsTheGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	n := &Nix{}
	cmd := n.Exec(ctx, "sh", "-c", `sleep 1000 & echo $!; wait`)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	p, err := n.Start(cmd)
	require.NoError(t, err)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	grandchild, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err)
	require.False(t, gone(grandchild))
	cancel()
	require.Error(t, p.Wait())
	require.Eventually(t, func() bool { return gone(grandchild) }, 10*time.Second, 10*time.Millisecond)
}

// gone reports whether pid has exited (a zombie nobody reaps counts).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// A process killed with SIGKILL leaves no nix behind: the kernel kills the
// child it started (the parent-death signal).
func TestKilledParentLeavesNoNix(t *testing.T) {
	if os.Getenv("NIXBUS_TEST_NIX_PARENT") != "" {
		cmd := (&Nix{}).Command(t.Context(), []string{"repl"})
		stdin, err := cmd.StdinPipe() // kept open: the repl waits for input
		if err != nil {
			os.Exit(2)
		}
		defer stdin.Close()
		if _, err := (&Nix{}).Start(cmd); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString(strconv.Itoa(cmd.Process.Pid) + "\n")
		select {}
	}
	parent := exec.Command(os.Args[0], "-test.run", "^TestKilledParentLeavesNoNix$")
	parent.Env = append(os.Environ(), "NIXBUS_TEST_NIX_PARENT=1")
	stdout, err := parent.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, parent.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	child, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err)
	require.False(t, gone(child), "nix repl runs")
	require.NoError(t, parent.Process.Signal(syscall.SIGKILL))
	err = parent.Wait()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "%v", err)
	require.Eventually(t, func() bool { return gone(child) }, 10*time.Second, 10*time.Millisecond)
}

// Under a memory limit nix fails with an error saying so.
func TestMemoryLimit(t *testing.T) {
	n := &Nix{MaxMemoryMB: 256}
	_, err := n.Output(t.Context(), []string{"eval"}, "--expr",
		`builtins.length (builtins.genericClosure { startSet = [ { key = 0; } ]; operator = x: [ { key = x.key + 1; } ]; })`)
	var ne *Error
	require.ErrorAs(t, err, &ne)
	require.Equal(t, 256, ne.MemoryLimitMB, ne.Stderr)
	require.Contains(t, err.Error(), "out of memory")
	require.Contains(t, err.Error(), "256 MiB")
}
