package flagx

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSplit(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ,", nil},
		{"x86_64-linux", []string{"x86_64-linux"}},
		{" a, b ,,c ", []string{"a", "b", "c"}},
	} {
		require.Equal(t, tt.want, Split(tt.in), "%q", tt.in)
	}
}
