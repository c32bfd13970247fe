package evaljobs

import (
	"nixbus.dev/nixbus/pkg/jsontok"
)

// The readers of one nix-eval-jobs field, lenient about types: a value of
// another type than the one wanted is skipped (validated, not decoded)
// and reads as absent, rather than losing the record.

// notNull reports whether the next value is not null, reading a null.
func notNull(sc *jsontok.Scanner) (bool, error) {
	k, err := sc.Peek()
	if err != nil || k != jsontok.Null {
		return err == nil, err
	}
	_, err = sc.Next()
	return false, err
}

// optStr reads a string; a value of another type is skipped (ok false).
func optStr(sc *jsontok.Scanner) (s string, ok bool, err error) {
	k, err := sc.Peek()
	if err != nil {
		return "", false, err
	}
	if k != jsontok.String {
		return "", false, sc.Skip()
	}
	if _, err := sc.Next(); err != nil {
		return "", false, err
	}
	return sc.Text(), true, nil
}

// optStrs reads a non-empty array of strings; anything else is skipped
// and gives nil.
func optStrs(sc *jsontok.Scanner) ([]string, error) {
	if k, err := sc.Peek(); err != nil || k != jsontok.ArrayStart {
		if err != nil {
			return nil, err
		}
		return nil, sc.Skip()
	}
	out := make([]string, 0, 4) // attribute paths are short
	valid := true
	err := sc.Elements(func() error {
		s, ok, err := optStr(sc)
		valid = valid && ok
		out = append(out, s)
		return err
	})
	if err != nil || !valid || len(out) == 0 {
		return nil, err
	}
	return out, nil
}

// optBool reads true or false; a value of another type is skipped.
func optBool(sc *jsontok.Scanner) (v, ok bool, err error) {
	k, err := sc.Peek()
	if err != nil {
		return false, false, err
	}
	if k != jsontok.True && k != jsontok.False {
		return false, false, sc.Skip()
	}
	_, err = sc.Next()
	return k == jsontok.True, err == nil, err
}

// optOutputs reads {"<output>": "<path>" | null, ...}; anything else, or
// an object with a value of another type, is skipped and gives nil.
func optOutputs(sc *jsontok.Scanner) (map[string]string, error) {
	if k, err := sc.Peek(); err != nil || k != jsontok.ObjectStart {
		if err != nil {
			return nil, err
		}
		return nil, sc.Skip()
	}
	out := map[string]string{}
	valid := true
	err := sc.Members(func(key []byte) error {
		name := string(key)
		notNull, err := notNull(sc)
		if err != nil || !notNull {
			out[name] = ""
			return err
		}
		p, ok, err := optStr(sc)
		valid = valid && ok
		out[name] = p
		return err
	})
	if err != nil || !valid {
		return nil, err
	}
	return out, nil
}
