package evaljobs

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"nixbus.dev/nixbus/pkg/jsontok"
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
	d := decoder{sc: jsontok.NewBytes(data, jsontok.Limits{})}
	if err := d.value(rv.Elem()); err != nil {
		return fmt.Errorf("decode JSON: %w", err)
	}
	if err := d.sc.Expect(jsontok.End); err != nil {
		return fmt.Errorf("decode JSON: %w", err)
	}
	return nil
}

type decoder struct{ sc *jsontok.Scanner }

func (d *decoder) value(v reflect.Value) error {
	at := d.sc.Offset()
	k, err := d.sc.Peek()
	if err != nil {
		return err
	}
	if k == jsontok.Null {
		v.SetZero()
		_, err := d.sc.Next()
		return err
	}
	mismatch := func() error {
		return fmt.Errorf("at byte %d: cannot put a JSON %s into %s", at, k, v.Type())
	}
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
		if k != jsontok.String {
			return mismatch()
		}
		if _, err := d.sc.Next(); err != nil {
			return err
		}
		v.SetString(d.sc.Text())
		return nil
	case reflect.Bool:
		if k != jsontok.True && k != jsontok.False {
			return mismatch()
		}
		v.SetBool(k == jsontok.True)
		_, err := d.sc.Next()
		return err
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := d.number(k, mismatch)
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
		n, err := d.number(k, mismatch)
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
		n, err := d.number(k, mismatch)
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
		if k != jsontok.ArrayStart {
			return mismatch()
		}
		v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		return d.sc.Elements(func() error {
			v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
			return d.value(v.Index(v.Len() - 1))
		})
	case reflect.Map:
		if k != jsontok.ObjectStart || v.Type().Key().Kind() != reflect.String {
			return mismatch()
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		return d.sc.Members(func(key []byte) error {
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
		if k != jsontok.ObjectStart {
			return mismatch()
		}
		return d.sc.Members(func(key []byte) error {
			f, ok := field(v, string(key))
			if !ok {
				return d.sc.Skip()
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

// number reads the next number token; a value of another kind is a
// mismatch.
func (d *decoder) number(k jsontok.Kind, mismatch func() error) (string, error) {
	if k != jsontok.Number {
		return "", mismatch()
	}
	if _, err := d.sc.Next(); err != nil {
		return "", err
	}
	return d.sc.Text(), nil
}

// anyValue reads any value as encoding/json does into an any (numbers as
// float64), keeping string bytes.
func (d *decoder) anyValue() (any, error) {
	k, err := d.sc.Peek()
	if err != nil {
		return nil, err
	}
	switch k {
	case jsontok.ObjectStart:
		m := map[string]any{}
		err := d.sc.Members(func(key []byte) error {
			name := string(key)
			x, err := d.anyValue()
			m[name] = x
			return err
		})
		return m, err
	case jsontok.ArrayStart:
		s := []any{}
		err := d.sc.Elements(func() error {
			x, err := d.anyValue()
			s = append(s, x)
			return err
		})
		return s, err
	}
	if _, err := d.sc.Next(); err != nil {
		return nil, err
	}
	switch k {
	case jsontok.String:
		return d.sc.Text(), nil
	case jsontok.True, jsontok.False:
		return k == jsontok.True, nil
	case jsontok.Null:
		return nil, nil
	}
	return strconv.ParseFloat(d.sc.Text(), 64)
}
