package evaljobs

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Unmarshal is json.Unmarshal for what Nix prints (`nix eval --json`): it
// keeps the bytes of strings that are not UTF-8, where encoding/json would
// replace them with U+FFFD and so merge distinct attribute names. It fills
// structs (by json tag, else field name; unknown keys skipped), slices,
// maps with string keys, strings, bools, numbers, pointers and any.
func Unmarshal(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("evaljobs.Unmarshal: need a non-nil pointer")
	}
	d := decoder{b: data, quoteAt: -1}
	if err := d.value(rv.Elem()); err != nil {
		return fmt.Errorf("decode JSON at byte %d: %w", d.pos, err)
	}
	d.ws()
	if d.pos != len(d.b) {
		return fmt.Errorf("decode JSON: unexpected data at byte %d", d.pos)
	}
	return nil
}

func (d *decoder) value(v reflect.Value) error {
	c, err := d.peek()
	if err != nil {
		return err
	}
	if c == 'n' {
		if err := d.literal("null"); err != nil {
			return err
		}
		v.SetZero()
		return nil
	}
	mismatch := func() error { return fmt.Errorf("cannot put a JSON value starting %q into %s", c, v.Type()) }
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.value(v.Elem())
	case reflect.Interface:
		if v.NumMethod() != 0 {
			return mismatch()
		}
		x, err := d.anyValue()
		if err != nil {
			return err
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
		return nil
	case reflect.String:
		if c != '"' {
			return mismatch()
		}
		s, err := d.str()
		if err != nil {
			return err
		}
		v.SetString(s)
		return nil
	case reflect.Bool:
		switch c {
		case 't':
			v.SetBool(true)
			return d.literal("true")
		case 'f':
			v.SetBool(false)
			return d.literal("false")
		}
		return mismatch()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := d.number()
		if err != nil {
			return err
		}
		i, err := strconv.ParseInt(n, 10, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetInt(i)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := d.number()
		if err != nil {
			return err
		}
		u, err := strconv.ParseUint(n, 10, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetUint(u)
		return nil
	case reflect.Float32, reflect.Float64:
		n, err := d.number()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(n, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetFloat(f)
		return nil
	case reflect.Slice:
		if c != '[' {
			return mismatch()
		}
		v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		return d.array(func() error {
			v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
			return d.value(v.Index(v.Len() - 1))
		})
	case reflect.Map:
		if c != '{' || v.Type().Key().Kind() != reflect.String {
			return mismatch()
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		return d.object(func(key []byte) error {
			k := reflect.New(v.Type().Key()).Elem()
			k.SetString(string(key))
			e := reflect.New(v.Type().Elem()).Elem()
			if err := d.value(e); err != nil {
				return err
			}
			v.SetMapIndex(k, e)
			return nil
		})
	case reflect.Struct:
		if c != '{' {
			return mismatch()
		}
		return d.object(func(key []byte) error {
			f, ok := field(v, string(key))
			if !ok {
				return d.skip()
			}
			return d.value(f)
		})
	}
	return mismatch()
}

// field finds the exported field of struct v that key names: by json tag,
// else by name, ignoring case as encoding/json does.
func field(v reflect.Value, key string) (reflect.Value, bool) {
	t := v.Type()
	var fold reflect.Value
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if name == key {
			return v.Field(i), true
		}
		if !fold.IsValid() && strings.EqualFold(name, key) {
			fold = v.Field(i)
		}
	}
	return fold, fold.IsValid()
}

// array reads [elem, ...], calling elem for each element.
func (d *decoder) array(elem func() error) error {
	if err := d.expect('['); err != nil {
		return err
	}
	if c, err := d.peek(); err != nil {
		return err
	} else if c == ']' {
		d.pos++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		c, err := d.peek()
		if err != nil {
			return err
		}
		d.pos++
		switch c {
		case ',':
		case ']':
			return nil
		default:
			return fmt.Errorf("expected ',' or ']', found %q", c)
		}
	}
}

// number returns the next number token.
func (d *decoder) number() (string, error) {
	d.ws()
	start := d.pos
	for d.pos < len(d.b) && strings.IndexByte("-+.0123456789eE", d.b[d.pos]) >= 0 {
		d.pos++
	}
	if d.pos == start {
		return "", errors.New("expected a number")
	}
	return string(d.b[start:d.pos]), nil
}

// anyValue reads any value as encoding/json does into an any (numbers as
// float64), keeping string bytes.
func (d *decoder) anyValue() (any, error) {
	c, err := d.peek()
	if err != nil {
		return nil, err
	}
	switch c {
	case '{':
		m := map[string]any{}
		err := d.object(func(key []byte) error {
			x, err := d.anyValue()
			m[string(key)] = x
			return err
		})
		return m, err
	case '[':
		s := []any{}
		err := d.array(func() error {
			x, err := d.anyValue()
			s = append(s, x)
			return err
		})
		return s, err
	case '"':
		return d.str()
	case 't', 'f':
		var b bool
		err := d.value(reflect.ValueOf(&b).Elem())
		return b, err
	case 'n':
		return nil, d.literal("null")
	}
	n, err := d.number()
	if err != nil {
		return nil, err
	}
	return strconv.ParseFloat(n, 64)
}
