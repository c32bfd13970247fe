// Package storepath is nixbus's one check of a Nix store path. Every path
// nix-eval-jobs, a flake or a bus message hands over is hostile until it
// passes here: a derivation or output path must be
// <store dir>/<32 nix-base32 characters>-<name>, with a name Nix accepts
// (no "/", no "..", no leading "."), directly inside the configured store
// directory. Reading a derivation also refuses anything but a regular file
// of bounded size, and errors never quote what a file holds.
package storepath

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"nixbus.dev/nixbus/pkg/printable"
)

// DefaultDir is the Nix store unless an operator configures another.
const DefaultDir = "/nix/store"

// MaxDrvSize bounds a .drv file that ReadDrv reads. Real derivations are
// kilobytes; the largest in nixpkgs are a few megabytes.
const MaxDrvSize = 32 << 20

const (
	hashLen    = 32
	maxNameLen = 211
	// base32 is Nix's base-32 alphabet (no e, o, u, t).
	base32 = "0123456789abcdfghijklmnpqrsvwxyz"
	// maxShown bounds how much of a hostile path an error repeats.
	maxShown = 200
)

// Error says why a path is not an acceptable store path.
type Error struct {
	Path, Dir, Why string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s is not a store path in %s: %s", Show(e.Path), e.Dir, e.Why)
}

// Show is how an error or a log repeats an untrusted path: quoted,
// printable and cut to a bounded length.
func Show(p string) string {
	if len(p) > maxShown {
		cut := maxShown
		for cut > 0 && p[cut]&0xc0 == 0x80 { // not inside a UTF-8 sequence
			cut--
		}
		return printable.Quote(p[:cut]) + "..."
	}
	return printable.Quote(p)
}

// Check reports whether p is <dir>/<hash>-<name>.
func Check(dir, p string) error {
	if dir != "" {
		dir = filepath.Clean(dir)
	}
	base, ok := strings.CutPrefix(p, dir+"/")
	if dir == "" || !ok {
		return &Error{Path: p, Dir: dir, Why: "not directly inside the store"}
	}
	if why := checkBase(base); why != "" {
		return &Error{Path: p, Dir: dir, Why: why}
	}
	return nil
}

// CheckDrv reports whether p is <dir>/<hash>-<name>.drv.
func CheckDrv(dir, p string) error {
	if err := Check(dir, p); err != nil {
		return err
	}
	if !strings.HasSuffix(p, ".drv") {
		return &Error{Path: p, Dir: dir, Why: "not a .drv file"}
	}
	return nil
}

// IsBase32Hash reports whether h is a store path hash part.
func IsBase32Hash(h string) bool {
	if len(h) != hashLen {
		return false
	}
	for i := 0; i < len(h); i++ {
		if strings.IndexByte(base32, h[i]) < 0 {
			return false
		}
	}
	return true
}

func checkBase(base string) string {
	if len(base) < hashLen+2 || base[hashLen] != '-' || !IsBase32Hash(base[:hashLen]) {
		return "no <32-character nix-base32 hash>-<name>"
	}
	name := base[hashLen+1:]
	if len(name) > maxNameLen {
		return "name too long"
	}
	if name[0] == '.' {
		return "name starts with '.'"
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("+-._?=", c) >= 0:
		default:
			return "name has a character nix does not allow"
		}
	}
	return ""
}

// ReadDrv reads the derivation file p after CheckDrv: it must be a regular
// file (a symbolic link is not followed) of at most MaxDrvSize bytes.
// Errors name the path, never the content.
func ReadDrv(dir, p string) ([]byte, error) {
	dir = filepath.Clean(dir)
	if err := CheckDrv(dir, p); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, &Error{Path: p, Dir: dir, Why: "a symbolic link"}
		}
		return nil, fmt.Errorf("open derivation %s: %w", Show(p), errors.Unwrap(err))
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat derivation %s: %w", Show(p), err)
	}
	if !st.Mode().IsRegular() {
		return nil, &Error{Path: p, Dir: dir, Why: "not a regular file"}
	}
	if st.Size() > MaxDrvSize {
		return nil, fmt.Errorf("derivation %s: larger than %d bytes", Show(p), MaxDrvSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxDrvSize+1))
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", Show(p), err)
	}
	if len(data) > MaxDrvSize {
		return nil, fmt.Errorf("derivation %s: larger than %d bytes", Show(p), MaxDrvSize)
	}
	return data, nil
}
