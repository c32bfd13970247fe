package archtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestWireContractOnlyGrows is nixbus's `buf breaking`: JetStream keeps old
// messages across deploys, so every message, field and enum value of the
// last released contract (proto/released/, copied there at each release by
// `make proto-release`) must still exist with the same number, name, type
// and cardinality in the current one. Adding is always allowed.
func TestWireContractOnlyGrows(t *testing.T) {
	released := compileReleased(t)
	current := nixbuspb.File_nixbus_v1_nixbus_proto
	problems := wireBreaks(released, current)
	require.Empty(t, problems, "proto/nixbus/v1 breaks the released wire contract; add, never change or remove")
}

// TestWireBreaksFindsChanges shows the check is not vacuous: each kind of
// breaking edit to a copy of the contract is reported.
func TestWireBreaksFindsChanges(t *testing.T) {
	base := protodesc.ToFileDescriptorProto(nixbuspb.File_nixbus_v1_nixbus_proto)
	msg := func(fd *descriptorpb.FileDescriptorProto, name string) *descriptorpb.DescriptorProto {
		for _, m := range fd.MessageType {
			if m.GetName() == name {
				return m
			}
		}
		t.Fatalf("no message %s", name)
		return nil
	}
	tests := []struct {
		name string
		edit func(fd *descriptorpb.FileDescriptorProto)
	}{
		{"field renumbered", func(fd *descriptorpb.FileDescriptorProto) {
			msg(fd, "Job").Field[1].Number = proto.Int32(99)
		}},
		{"field retyped", func(fd *descriptorpb.FileDescriptorProto) {
			msg(fd, "EvalDone").Field[1].Type = descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
		}},
		{"field renamed", func(fd *descriptorpb.FileDescriptorProto) {
			msg(fd, "Job").Field[1].Name = proto.String("attribute")
		}},
		{"field made repeated", func(fd *descriptorpb.FileDescriptorProto) {
			msg(fd, "Job").Field[1].Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
		}},
		{"message removed", func(fd *descriptorpb.FileDescriptorProto) {
			fd.MessageType = fd.MessageType[1:]
		}},
		{"enum value removed", func(fd *descriptorpb.FileDescriptorProto) {
			fd.EnumType[0].Value = fd.EnumType[0].Value[:1]
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			changed := proto.Clone(base).(*descriptorpb.FileDescriptorProto)
			tc.edit(changed)
			cur, err := protodesc.NewFile(changed, nil)
			if err != nil {
				// Some edits make the file itself invalid; rebuild
				// with a registry that allows what protodesc refuses.
				cur, err = protodesc.FileOptions{AllowUnresolvable: true}.New(changed, nil)
			}
			require.NoError(t, err)
			require.NotEmpty(t, wireBreaks(nixbuspb.File_nixbus_v1_nixbus_proto, cur))
		})
	}
	require.Empty(t, wireBreaks(nixbuspb.File_nixbus_v1_nixbus_proto, nixbuspb.File_nixbus_v1_nixbus_proto))
}

// compileReleased turns the released .proto into a descriptor with protoc
// (installed by `make setup`, as `make proto` needs it too).
func compileReleased(t *testing.T) protoreflect.FileDescriptor {
	t.Helper()
	root := filepath.Join("..", "..", "proto", "released")
	out := filepath.Join(t.TempDir(), "released.binpb")
	cmd := exec.CommandContext(t.Context(), "protoc", "-I", root, "--descriptor_set_out="+out, "nixbus/v1/nixbus.proto")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "protoc (make setup installs it): %s", b)
	raw, err := os.ReadFile(out)
	require.NoError(t, err)
	var set descriptorpb.FileDescriptorSet
	require.NoError(t, proto.Unmarshal(raw, &set))
	require.Len(t, set.File, 1)
	fd, err := protodesc.NewFile(set.File[0], nil)
	require.NoError(t, err)
	return fd
}

// wireBreaks lists what current lost or changed of released.
func wireBreaks(released, current protoreflect.FileDescriptor) []string {
	var out []string
	if released.Package() != current.Package() {
		out = append(out, fmt.Sprintf("package %s became %s", released.Package(), current.Package()))
	}
	out = append(out, messageBreaks(released.Messages(), current.Messages())...)
	out = append(out, enumBreaks(released.Enums(), current.Enums())...)
	return out
}

func messageBreaks(released, current protoreflect.MessageDescriptors) []string {
	var out []string
	for i := range released.Len() {
		rm := released.Get(i)
		cm := current.ByName(rm.Name())
		if cm == nil {
			out = append(out, fmt.Sprintf("message %s removed", rm.FullName()))
			continue
		}
		for j := range rm.Fields().Len() {
			rf := rm.Fields().Get(j)
			cf := cm.Fields().ByNumber(rf.Number())
			switch {
			case cf == nil:
				out = append(out, fmt.Sprintf("field %s = %d removed", rf.FullName(), rf.Number()))
			case cf.Name() != rf.Name():
				out = append(out, fmt.Sprintf("field %s = %d renamed to %s", rf.FullName(), rf.Number(), cf.Name()))
			case cf.Kind() != rf.Kind() || cf.Cardinality() != rf.Cardinality() || cf.IsMap() != rf.IsMap():
				out = append(out, fmt.Sprintf("field %s = %d changed type", rf.FullName(), rf.Number()))
			case (rf.Message() != nil && cf.Message() != nil && rf.Message().FullName() != cf.Message().FullName()) ||
				(rf.Enum() != nil && cf.Enum() != nil && rf.Enum().FullName() != cf.Enum().FullName()):
				out = append(out, fmt.Sprintf("field %s = %d changed type", rf.FullName(), rf.Number()))
			}
		}
		out = append(out, messageBreaks(rm.Messages(), cm.Messages())...)
		out = append(out, enumBreaks(rm.Enums(), cm.Enums())...)
	}
	return out
}

func enumBreaks(released, current protoreflect.EnumDescriptors) []string {
	var out []string
	for i := range released.Len() {
		re := released.Get(i)
		ce := current.ByName(re.Name())
		if ce == nil {
			out = append(out, fmt.Sprintf("enum %s removed", re.FullName()))
			continue
		}
		for j := range re.Values().Len() {
			rv := re.Values().Get(j)
			cv := ce.Values().ByNumber(rv.Number())
			if cv == nil || cv.Name() != rv.Name() {
				out = append(out, fmt.Sprintf("enum value %s = %d removed or renamed", rv.FullName(), rv.Number()))
			}
		}
	}
	return out
}
