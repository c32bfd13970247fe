// Package nixtest makes derivations for tests that build with real nix.
package nixtest

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"nixbus.dev/nixbus/pkg/nix"
)

var seq atomic.Int64

// Derivation instantiates a derivation named name whose builder runs
// script with /bin/sh, salted with the test's name, the time and a
// counter, so that every call builds for real. It returns the .drv path.
func Derivation(t testing.TB, name, script string) string {
	t.Helper()
	salt := fmt.Sprintf("%s-%d-%d", t.Name(), time.Now().UnixNano(), seq.Add(1))
	expr := fmt.Sprintf(`builtins.derivation { name = %s; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" %s]; salt = %s; }`,
		nix.StringLiteral(name), nix.StringLiteral(script), nix.StringLiteral(salt))
	out, err := exec.Command("nix-instantiate", "--option", "substituters", "", "--expr", expr).Output()
	if err != nil {
		var stderr []byte
		if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
			stderr = exit.Stderr
		}
		t.Fatalf("instantiate %s: %v: %s", name, err, stderr)
	}
	return strings.TrimSpace(string(out))
}
