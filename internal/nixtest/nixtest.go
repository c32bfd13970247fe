// Package nixtest makes derivations for tests that build with real nix.
package nixtest

import (
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var seq atomic.Int64

// Derivation instantiates a derivation named name whose builder runs
// script with /bin/sh, salted with the test's name, the time and a
// counter, so that every call builds for real. It returns the .drv path.
func Derivation(t testing.TB, name, script string) string {
	t.Helper()
	salt := fmt.Sprintf("%s-%d-%d", t.Name(), time.Now().UnixNano(), seq.Add(1))
	expr := fmt.Sprintf(`builtins.derivation { name = %q; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" %q]; salt = %q; }`, name, script, salt)
	out, err := exec.Command("nix-instantiate", "--option", "substituters", "", "--expr", expr).Output()
	if err != nil {
		t.Fatalf("instantiate %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}
