package storepath_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/storepath"
)

const h = "0123456789abcdfghijklmnpqrsvwxyz"

func TestCheck(t *testing.T) {
	for p, ok := range map[string]bool{
		"/nix/store/" + h + "-hello-2.12":                  true,
		"/nix/store/" + h + "-a+b-_?=.x":                   true,
		"/nix/store/" + h + "-hello.drv":                   true,
		"/nix/store/" + h + "-" + strings.Repeat("n", 211): true,
		"/nix/store/" + h + "-" + strings.Repeat("n", 212): false,
		"/nix/store/" + h + "-":                            false,
		"/nix/store/" + h + "-.hidden":                     false,
		"/nix/store/" + h + "-a/b":                         false,
		"/nix/store/" + h + "-a b":                         false,
		"/nix/store/" + h + "-\xfd":                        false,
		"/nix/store/" + h[:31] + "-a":                      false,
		"/nix/store/" + strings.ToUpper(h) + "-a":          false,
		"/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-a":    false,
		"/nix/store/../etc/passwd":                         false,
		"/nix/store/" + h + "-x/../../../etc/passwd":       false,
		"/nix/store2/" + h + "-a":                          false,
		"/nix/store/sub/" + h + "-a":                       false,
		h + "-a":                                           false,
		"/etc/passwd":                                      false,
		"":                                                 false,
	} {
		err := storepath.Check("/nix/store", p)
		require.Equal(t, ok, err == nil, "%q: %v", p, err)
	}
	require.NoError(t, storepath.Check("/nix/store/", "/nix/store/"+h+"-a"))
	require.Error(t, storepath.Check("", "/"+h+"-a"))
	require.NoError(t, storepath.CheckDrv("/nix/store", "/nix/store/"+h+"-a.drv"))
	require.Error(t, storepath.CheckDrv("/nix/store", "/nix/store/"+h+"-a"))
}

func TestShowIsBoundedAndPrintable(t *testing.T) {
	s := storepath.Show(strings.Repeat("é", 1000) + "\x1b")
	require.Less(t, len(s), 260)
	require.NotContains(t, s, "\x1b")
	err := storepath.Check("/nix/store", "/nix/store/\x1b]0;x\a")
	require.NotContains(t, err.Error(), "\x1b")
	require.NotContains(t, err.Error(), "\a")
}

func TestReadDrv(t *testing.T) {
	store := t.TempDir()
	p := filepath.Join(store, h+"-a.drv")
	require.NoError(t, os.WriteFile(p, []byte("Derive()"), 0o444))
	b, err := storepath.ReadDrv(store, p)
	require.NoError(t, err)
	require.Equal(t, "Derive()", string(b))

	link := filepath.Join(store, h+"-l.drv")
	require.NoError(t, os.Symlink(p, link))
	_, err = storepath.ReadDrv(store, link)
	require.ErrorContains(t, err, "symbolic link")

	require.NoError(t, os.Mkdir(filepath.Join(store, h+"-d.drv"), 0o755))
	_, err = storepath.ReadDrv(store, filepath.Join(store, h+"-d.drv"))
	require.ErrorContains(t, err, "not a regular file")

	_, err = storepath.ReadDrv(store, "/dev/zero")
	require.Error(t, err)
	_, err = storepath.ReadDrv(store, filepath.Join(store, h+"-missing.drv"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
