package printable_test

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/printable"
)

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, text, line string }{
		{"plain", "plain", "plain"},
		{"two\nlines\tand tab", "two\nlines\tand tab", `two\x0alines\x09and tab`},
		{"\x1b[31mred\x1b[0m\a", `\x1b[31mred\x1b[0m\x07`, `\x1b[31mred\x1b[0m\x07`},
		{"cr\rnul\x00del\x7f", `cr\x0dnul\x00del\x7f`, `cr\x0dnul\x00del\x7f`},
		{"c1 \u009b csi \u0085", `c1 \u009b csi \u0085`, `c1 \u009b csi \u0085`},
		{"bad \xfd\xfe utf8", `bad \xfd\xfe utf8`, `bad \xfd\xfe utf8`},
		{"ünïcödé ✓", "ünïcödé ✓", "ünïcödé ✓"},
	} {
		t.Run(strconv.Quote(tc.in), func(t *testing.T) {
			require.Equal(t, tc.text, printable.Text(tc.in))
			require.Equal(t, tc.line, printable.Line(tc.in))
		})
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"a":          `"a"`,
		"a.b":        `"a.b"`,
		`x"y\z${a}`:  `"x\"y\\z\${a}"`,
		"a\xfd":      `"a\xfd"`,
		"a\xfe":      `"a\xfe"`,
		`a\xfd`:      `"a\\xfd"`,
		"bell\a\x1b": `"bell\x07\x1b"`,
		"nl\n\r\t":   `"nl\n\r\t"`,
		"\u0085":     `"\u0085"`,
	} {
		require.Equal(t, want, printable.Quote(in), "%q", in)
	}
}

// unquote inverts Quote; the test of its injectivity.
func unquote(t *testing.T, q string) string {
	t.Helper()
	require.True(t, strings.HasPrefix(q, `"`) && strings.HasSuffix(q, `"`) && len(q) >= 2, q)
	q = q[1 : len(q)-1]
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		if q[i] != '\\' {
			require.NotEqual(t, byte('"'), q[i], "unescaped quote in %s", q)
			b.WriteByte(q[i])
			continue
		}
		i++
		switch q[i] {
		case '\\', '"', '$':
			b.WriteByte(q[i])
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'x':
			v, err := strconv.ParseUint(q[i+1:i+3], 16, 8)
			require.NoError(t, err)
			b.WriteByte(byte(v))
			i += 2
		case 'u':
			v, err := strconv.ParseUint(q[i+1:i+5], 16, 16)
			require.NoError(t, err)
			b.WriteRune(rune(v))
			i += 4
		default:
			t.Fatalf("unknown escape \\%c in %s", q[i], q)
		}
	}
	return b.String()
}

func FuzzQuoteIsLosslessAndPrintable(f *testing.F) {
	for _, s := range []string{"", "a", "a\xfd", "a\xfe", `a\xfd`, "\x1b]0;title\a", "\u009b", "x\"y$", "\xc2", "\xc2\x85"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := printable.Quote(s)
		require.True(t, utf8.ValidString(q))
		for _, r := range q {
			require.False(t, r < 0x20 || (r >= 0x7f && r <= 0x9f), "control %U in %q", r, q)
		}
		require.Equal(t, s, unquote(t, q))

		text := printable.Text(s)
		require.True(t, utf8.ValidString(text))
		for _, r := range text {
			require.False(t, (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f), "control %U in %q", r, text)
		}
		require.NotContains(t, printable.Line(s), "\n")
	})
}

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		in, mark string
		n        int
		want     string
	}{
		{"short", "…", 10, "short"},
		{"exactly", "…", 7, "exactly"},
		{"abcdefghij", "…", 8, "abcde…"},
		{"ééééé", "…", 8, "éé…"}, // never half an é
		{"ééééé", "~", 4, "é~"},
		{"abcdef", "…", 2, ""}, // no room even for the mark
		{"abcdefghij", "\n(cut)", 8, "ab\n(cut)"},
		{"✓✓✓", "", 5, "✓"},
	} {
		got := printable.Cut(tc.in, tc.n, tc.mark)
		require.Equal(t, tc.want, got, "%q %d", tc.in, tc.n)
		require.LessOrEqual(t, len(got), tc.n)
		require.True(t, utf8.ValidString(got))
	}
}
