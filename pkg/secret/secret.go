// Package secret loads the secrets an operator gives nixbus (SSH key, Gerrit
// HTTP password, signing key, NATS credentials) from files, and finds them
// by name in systemd's credentials directory ($CREDENTIALS_DIRECTORY, see
// LoadCredential= in systemd.exec(5)) when it is set.
//
// A secret file that group or others may access is refused, as OpenSSH
// refuses such a private key: the error names the file and the fix. Files
// that are not secret but pin trust (known_hosts) must not be writable by
// group or others.
//
// Secrets never go into argv, URLs, logs or the bus: callers pass the
// path (never the content) on, and the errors here never quote content.
package secret

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// EnvCredentialsDirectory is the variable systemd sets to the directory
// holding a unit's credentials.
const EnvCredentialsDirectory = "CREDENTIALS_DIRECTORY"

// MaxSize bounds what Read reads: secrets are small, and a path pointing at
// /dev/zero must not grow the process.
const MaxSize = 1 << 20

// Locate returns the file a secret flag's value names: a value holding a
// path separator is a path; a bare name is looked up in
// $CREDENTIALS_DIRECTORY first (when set and the file exists there), then
// taken as a relative path. An empty value means the credential called
// name, when $CREDENTIALS_DIRECTORY holds one, and "" otherwise.
func Locate(value, name string) string {
	dir := os.Getenv(EnvCredentialsDirectory)
	lookup := func(n string) (string, bool) {
		if dir == "" || n == "" || strings.ContainsRune(n, filepath.Separator) || n == "." || n == ".." {
			return "", false
		}
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err != nil {
			return "", false
		}
		return p, true
	}
	if value == "" {
		p, _ := lookup(name)
		return p
	}
	if p, ok := lookup(value); ok {
		return p
	}
	return value
}

// FlagVar registers a flag holding a secret's file: its value goes through
// Locate, so "--gerrit.ssh.key-file gerrit-ssh-key" finds the systemd
// credential of that name, and an unset flag defaults to the credential
// called name when there is one.
func FlagVar(fs *flag.FlagSet, p *string, flagName, credential, usage string) {
	*p = Locate(*p, credential)
	usage += fmt.Sprintf(" (a path, or a credential name in $%s; default: credential %q if present)", EnvCredentialsDirectory, credential)
	fs.Var(&fileFlag{p: p}, flagName, usage)
}

type fileFlag struct{ p *string }

func (f *fileFlag) String() string {
	if f.p == nil {
		return ""
	}
	return *f.p
}

func (f *fileFlag) Set(v string) error {
	*f.p = Locate(v, "")
	return nil
}

// PermissionError says a secret file is open to group or others.
type PermissionError struct {
	Path string
	Mode fs.FileMode
	// Writable is set for trust files (known_hosts), where only writing by
	// group or others is refused.
	Writable bool
}

func (e *PermissionError) Error() string {
	if e.Writable {
		return fmt.Sprintf("permissions %04o for %s are too open: it pins trust and must not be writable by group or others; fix with: chmod go-w %s",
			e.Mode.Perm(), e.Path, e.Path)
	}
	return fmt.Sprintf("permissions %04o for %s are too open: a secret must not be accessible by group or others; fix with: chmod go-rwx %s",
		e.Mode.Perm(), e.Path, e.Path)
}

// Read reads the secret file at path after checking that it is a regular
// file (symlinks are followed) that only its owner may access, and that it
// holds at most MaxSize bytes.
func Read(path string) ([]byte, error) {
	return read(path, 0o077, false)
}

// ReadString is Read without trailing line breaks, for passwords.
func ReadString(path string) (string, error) {
	b, err := Read(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Check checks the secret file at path as Read does, without keeping its
// content: for a file another program reads (ssh -i, nix store sign).
func Check(path string) error {
	_, err := read(path, 0o077, false)
	return err
}

// ReadTrusted reads a file that is not secret but pins trust (a
// known_hosts file): group or others may read it, not write it.
func ReadTrusted(path string) ([]byte, error) {
	return read(path, 0o022, true)
}

// CheckTrusted checks a trust file as ReadTrusted does.
func CheckTrusted(path string) error {
	_, err := read(path, 0o022, true)
	return err
}

func read(path string, forbidden fs.FileMode, trust bool) ([]byte, error) {
	if path == "" {
		return nil, errors.New("secret: no file given")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, errors.Unwrap(err))
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Mode().Perm()&forbidden != 0 {
		return nil, &PermissionError{Path: path, Mode: st.Mode(), Writable: trust}
	}
	if st.Size() > MaxSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxSize)
	}
	return b, nil
}
