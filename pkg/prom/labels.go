// Package prom holds what the services' Prometheus metrics share: one
// label style for protobuf enums, the nixbus_build_info metric, and a
// collector of JetStream consumer state read on scrape.
package prom

import (
	"strings"
	"unicode"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// EnumLabel is e as a label value: its value name without the enum's
// prefix, in lower case with dashes (RUN_STATUS_FAILED is "failed",
// KIND_PATCHSET_CREATED "patchset-created"), the style of every nixbus
// label. A number the enum does not define is "unknown".
func EnumLabel(e protoreflect.Enum) string {
	v := e.Descriptor().Values().ByNumber(e.Number())
	if v == nil {
		return "unknown"
	}
	return valueLabel(e.Descriptor(), v)
}

// EnumLabels are the label values of every value of e's enum but its
// zero value (UNSPECIFIED), to create a metric's series at start-up.
func EnumLabels(e protoreflect.Enum) []string {
	d := e.Descriptor()
	var out []string
	for i := range d.Values().Len() {
		if v := d.Values().Get(i); v.Number() != 0 {
			out = append(out, valueLabel(d, v))
		}
	}
	return out
}

func valueLabel(d protoreflect.EnumDescriptor, v protoreflect.EnumValueDescriptor) string {
	name := strings.TrimPrefix(string(v.Name()), enumPrefix(string(d.Name())))
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// enumPrefix is the prefix protobuf style gives an enum's values:
// RunStatus's is RUN_STATUS_.
func enumPrefix(name string) string {
	var b strings.Builder
	for i, r := range name {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String() + "_"
}
