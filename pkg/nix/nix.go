// Package nix runs the nix command line without a shell: every argument is
// passed to exec as is, so no attribute name or message can be interpreted.
package nix

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Nix is how to call nix on this host.
type Nix struct {
	// Bin is the nix executable; "nix" from PATH when empty.
	Bin string
	// Options are passed as --option NAME VALUE to every call (for
	// example substituters, or builders for a remote-builder farm).
	Options map[string]string
	// Env is appended to the process environment.
	Env []string
	// MaxMemoryMB, when positive, caps the memory of every nix process
	// started with Start, Run or Output (see Start).
	MaxMemoryMB int

	versionMu sync.Mutex
	version   *Version

	callsMu sync.Mutex
	calls   map[string]int
}

// Version is nix's version.
type Version struct{ Major, Minor, Patch int }

// AtLeast reports whether v >= major.minor.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

func (n *Nix) bin() string {
	if n == nil || n.Bin == "" {
		return "nix"
	}
	return n.Bin
}

// Args are the flags every call gets: the experimental features nixbus
// relies on (so no nix.conf edit is needed) and the configured options.
func (n *Nix) Args() []string {
	args := []string{"--extra-experimental-features", "nix-command flakes"}
	if n == nil {
		return args
	}
	keys := make([]string, 0, len(n.Options))
	for k := range n.Options {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		args = append(args, "--option", k, n.Options[k])
	}
	return args
}

// Command returns `nix <sub...> <common flags> <rest...>`, not yet started.
// sub is the subcommand words (e.g. "build" or "store", "sign").
func (n *Nix) Command(ctx context.Context, sub []string, rest ...string) *exec.Cmd {
	n.count(strings.Join(sub, " "))
	args := append(append(append([]string{}, sub...), n.Args()...), rest...)
	return n.Exec(ctx, n.bin(), args...)
}

// DaemonCommand returns `nix-daemon <common flags> --stdio`, not yet
// started: a daemon serving one connection on its stdin and stdout,
// building in this process's store (or proxying to the system's daemon
// when this user cannot write the store). nix-daemon is looked up next
// to Bin. It counts as the call "daemon".
func (n *Nix) DaemonCommand(ctx context.Context) *exec.Cmd {
	bin := "nix-daemon"
	if b := n.bin(); strings.ContainsRune(b, filepath.Separator) {
		bin = filepath.Join(filepath.Dir(b), bin)
	}
	n.count("daemon")
	return n.Exec(ctx, bin, append(n.Args(), "--stdio")...)
}

func (n *Nix) count(call string) {
	if n == nil {
		return
	}
	n.callsMu.Lock()
	defer n.callsMu.Unlock()
	if n.calls == nil {
		n.calls = map[string]int{}
	}
	n.calls[call]++
}

// Calls counts the nix commands made with Command so far, by subcommand
// ("build", "store sign", ...): what tests of per-job cost count.
func (n *Nix) Calls() map[string]int {
	n.callsMu.Lock()
	defer n.callsMu.Unlock()
	return maps.Clone(n.calls)
}

// Output runs a nix command and returns its stdout; a failure's error holds
// the head and tail of stderr (see Run), which is where nix explains itself.
func (n *Nix) Output(ctx context.Context, sub []string, rest ...string) ([]byte, error) {
	cmd := n.Command(ctx, sub, rest...)
	var stdout bytes.Buffer
	err := n.Run(cmd, &stdout)
	return stdout.Bytes(), err
}

// Error is a failed nix invocation.
type Error struct {
	Args   []string
	Err    error
	Stderr string
	// MemoryLimitMB is the limit the process ran into, when it did.
	MemoryLimitMB int
}

func (e *Error) Error() string {
	if e.MemoryLimitMB > 0 {
		return fmt.Sprintf("%s: %s", strings.Join(e.Args[:min(len(e.Args), 3)], " "), e.MemoryMessage())
	}
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.Args[:min(len(e.Args), 3)], " "), e.Err, ErrorMessage(e.Stderr))
}

// MemoryMessage says that the process hit its memory limit.
func (e *Error) MemoryMessage() string {
	return fmt.Sprintf("out of memory: nix used more than its limit of %d MiB (--evaluator.max-memory-size)", e.MemoryLimitMB)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorMessage extracts nix's own error from stderr: from the last line
// starting with "error:" to the end, without progress noise and warnings.
func ErrorMessage(stderr string) string {
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(ansi.ReplaceAllString(l, "")), "error:") {
			start = i
			break
		}
	}
	if start < 0 {
		if len(lines) > 5 {
			lines = lines[len(lines)-5:]
		}
		return strings.TrimSpace(ansi.ReplaceAllString(strings.Join(lines, "\n"), ""))
	}
	out := make([]string, 0, len(lines)-start)
	for _, l := range lines[start:] {
		l = ansi.ReplaceAllString(l, "")
		if strings.HasPrefix(l, "warning:") {
			continue
		}
		out = append(out, l)
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// StripANSI removes terminal colour and cursor sequences from s.
func StripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	return ansi.ReplaceAllString(s, "")
}

// Version returns nix's version. A successful answer is kept; a failed one
// (a cancelled ctx, nix briefly missing) is not, so the next call asks again.
func (n *Nix) Version(ctx context.Context) (Version, error) {
	n.versionMu.Lock()
	defer n.versionMu.Unlock()
	if n.version != nil {
		return *n.version, nil
	}
	var out bytes.Buffer
	if err := n.Run(n.Exec(ctx, n.bin(), "--version"), &out); err != nil {
		return Version{}, fmt.Errorf("nix --version: %w", err)
	}
	v, err := ParseVersion(out.String())
	if err != nil {
		return Version{}, err
	}
	n.version = &v
	return v, nil
}

var versionRe = regexp.MustCompile(`(\d+)\.(\d+)(?:\.(\d+))?`)

// ParseVersion reads "nix (Nix) 2.8.0" and the like.
func ParseVersion(s string) (Version, error) {
	m := versionRe.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("no version in %q", strings.TrimSpace(s))
	}
	var v Version
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.Patch, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

// DrvInstallable is how to name "all outputs of this derivation" on this
// nix: drv^* from 2.13 on, the bare .drv path before.
func DrvInstallable(v Version, drvPath string) string {
	if v.AtLeast(2, 13) {
		return drvPath + "^*"
	}
	return drvPath
}

// ShowDerivationCmd is the subcommand that prints derivations as JSON:
// `nix derivation show` from 2.15 on, `nix show-derivation` before.
func ShowDerivationCmd(v Version) []string {
	if v.AtLeast(2, 15) {
		return []string{"derivation", "show"}
	}
	return []string{"show-derivation"}
}

// StringLiteral quotes s as a Nix string literal, so that an untrusted
// attribute name can be placed inside a Nix expression: backslash, quote
// and the start of an antiquotation are escaped. Other bytes go through
// as they are, including bytes that are not UTF-8, which Nix's lexer
// takes as they are: the literal names exactly the attribute s.
func StringLiteral(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '$':
			b.WriteString(`\$`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
