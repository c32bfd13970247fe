package nixtest

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDerivationKeepsScript: the script reaches the derivation as written,
// whatever Nix would otherwise read in it (an antiquotation, a backslash).
func TestDerivationKeepsScript(t *testing.T) {
	script := `x=1; echo "${x}" '\t' > $out`
	data, err := os.ReadFile(Derivation(t, "quoting", script))
	require.NoError(t, err)
	// The .drv is an ATerm, which escapes quotes and backslashes.
	require.Contains(t, string(data), strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(script))
}
