package gerritingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Event is what nixbus reads from one stream-events line. Gerrit's
// documentation warns that any field may be missing; a missing (or
// mistyped) field is left zero here, and the handler decides.
type Event struct {
	Type     string
	Project  string
	Branch   string
	Change   int64
	ChangeID string
	Patchset int32
	Revision string
	Ref      string
	// Kind is the patchset kind (REWORK, TRIVIAL_REBASE, NO_CODE_CHANGE...).
	Kind string
	// Account is who caused the event (uploader, author, submitter,
	// restorer): username, else email, else name.
	Account string
	Comment string
	// RefName, OldRev and NewRev are a ref update's; NewRev is also a
	// merge's new branch tip.
	RefName, OldRev, NewRev string
	CreatedOn               int64
}

// DecodeEvent reads one stream-events line leniently: numbers may be JSON
// numbers or strings, project a string or an object with a name, and any
// field may be absent. Only a line that is not a JSON object with a type
// is an error.
func DecodeEvent(line []byte) (Event, error) {
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var raw any
	if err := d.Decode(&raw); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	if d.More() {
		return Event{}, errors.New("decode event: more than one JSON value on the line")
	}
	top, ok := raw.(map[string]any)
	if !ok {
		return Event{}, fmt.Errorf("decode event: %s is not a JSON object", kindOf(raw))
	}
	o := obj(top)
	ev := Event{Type: o.str("type")}
	if ev.Type == "" {
		return Event{}, errors.New("decode event: no type")
	}
	change, ps, ru := o.obj("change"), o.obj("patchSet"), o.obj("refUpdate")
	ev.Project = firstOf(o.name("project"), change.name("project"), ru.name("project"))
	ev.Branch = firstOf(change.str("branch"), strings.TrimPrefix(o.str("refName"), "refs/heads/"))
	ev.Change = change.int("number")
	ev.ChangeID = firstOf(change.str("id"), o.obj("changeKey").str("id"))
	ev.Patchset = int32(clamp(ps.int("number"), math.MaxInt32))
	ev.Revision = ps.str("revision")
	ev.Ref = ps.str("ref")
	ev.Kind = ps.str("kind")
	ev.Account = firstOf(o.obj("uploader").account(), o.obj("author").account(), o.obj("submitter").account(),
		o.obj("restorer").account(), ps.obj("uploader").account())
	ev.Comment = o.str("comment")
	ev.RefName = ru.str("refName")
	ev.OldRev = ru.str("oldRev")
	ev.NewRev = firstOf(o.str("newRev"), ru.str("newRev"))
	ev.CreatedOn = o.int("eventCreatedOn")
	return ev, nil
}

// obj is a decoded JSON object; its getters return zero values for keys
// that are absent or of an unexpected type.
type obj map[string]any

func (o obj) obj(k string) obj {
	m, _ := o[k].(map[string]any)
	return m
}

func (o obj) str(k string) string {
	switch v := o[k].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return ""
}

// int reads a non-negative integer from a number or a numeric string.
func (o obj) int(k string) int64 {
	var s string
	switch v := o[k].(type) {
	case json.Number:
		s = v.String()
	case string:
		s = strings.TrimSpace(v)
	default:
		return 0
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return max(n, 0)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && f < math.MaxInt64 && f == math.Trunc(f) {
		return int64(f)
	}
	return 0
}

// name reads a project: "name" or {"name": "name"}.
func (o obj) name(k string) string {
	if s := o.str(k); s != "" {
		return s
	}
	return o.obj(k).str("name")
}

func (o obj) account() string {
	return firstOf(o.str("username"), o.str("email"), o.str("name"))
}

func firstOf(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func clamp(n, hi int64) int64 {
	if n > hi {
		return 0
	}
	return n
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "a value"
}
