package nix

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVersionIsNotStuckOnAnError(t *testing.T) {
	n := &Nix{}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := n.Version(cancelled)
	require.Error(t, err)
	v, err := n.Version(t.Context())
	require.NoError(t, err)
	require.True(t, v.AtLeast(2, 0), v.String())
}

func TestParseVersionAndInstallables(t *testing.T) {
	for in, want := range map[string]Version{
		"nix (Nix) 2.8.0\n": {2, 8, 0}, "nix (Nix) 2.18.1": {2, 18, 1}, "nix (Lix, like Nix) 2.91.1": {2, 91, 1}, "2.3": {2, 3, 0},
	} {
		got, err := ParseVersion(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := ParseVersion("garbage")
	require.Error(t, err)
	require.Equal(t, "/nix/store/a.drv", DrvInstallable(Version{2, 8, 0}, "/nix/store/a.drv"))
	require.Equal(t, "/nix/store/a.drv^*", DrvInstallable(Version{2, 18, 0}, "/nix/store/a.drv"))
	require.Equal(t, []string{"show-derivation"}, ShowDerivationCmd(Version{2, 8, 0}))
	require.Equal(t, []string{"derivation", "show"}, ShowDerivationCmd(Version{2, 24, 0}))
}

func TestStringLiteral(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:        `"plain"`,
		`a"b`:          `"a\"b"`,
		`${builtins}`:  `"\${builtins}"`,
		`back\slash`:   `"back\\slash"`,
		"new\nline\t!": `"new\nline\t!"`,
		"a\xfd":        "\"a\xfd\"",
		"é":            `"é"`,
	} {
		require.Equal(t, want, StringLiteral(in), in)
	}
}

func TestErrorMessage(t *testing.T) {
	stderr := "warning: unable to download 'https://cache.nixos.org'\nbuilding '/nix/store/x.drv'...\n\x1b[31;1merror:\x1b[0m builder for '/nix/store/x.drv' failed with exit code 1\n"
	require.Equal(t, "error: builder for '/nix/store/x.drv' failed with exit code 1", ErrorMessage(stderr))
	require.Equal(t, "just noise", ErrorMessage("just noise\n"))
}
