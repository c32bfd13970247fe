package evaljobs

import (
	"fmt"

	"nixbus.dev/nixbus/pkg/jsontok"
)

// Strings reads a JSON list of strings as Nix prints one (`nix eval
// --json`, builtins.toJSON): it keeps the bytes of strings that are not
// UTF-8, where encoding/json would replace them with U+FFFD and so merge
// distinct attribute names. Anything but a list of strings is an error.
func Strings(data []byte) ([]string, error) {
	sc := jsontok.NewBytes(data, jsontok.Limits{})
	out := []string{}
	err := sc.Elements(func() error {
		if err := sc.Expect(jsontok.String); err != nil {
			return err
		}
		out = append(out, sc.Text())
		return nil
	})
	if err == nil {
		err = sc.Expect(jsontok.End)
	}
	if err != nil {
		return nil, fmt.Errorf("decode JSON: %w", err)
	}
	return out, nil
}
