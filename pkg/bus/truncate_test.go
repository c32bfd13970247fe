package bus

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"abcdefghij", 8, "abcde…"},
		{"ééééé", 8, "éé…"}, // never half an é
		{"abcdef", 2, ""},   // no room even for the mark
	}
	for _, tc := range tests {
		got := Truncate(tc.in, tc.n)
		require.Equal(t, tc.want, got, "%q %d", tc.in, tc.n)
		require.LessOrEqual(t, len(got), tc.n)
		require.True(t, utf8.ValidString(got))
	}
	big := strings.Repeat("x", 1<<20)
	require.Len(t, Truncate(big, 1000), 1000)
}
