package bus

import (
	"google.golang.org/protobuf/proto"

	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// ChangeTextBytes is what CutChange cuts each free-text field of a change
// event to: far more than any real Gerrit project, ref or name holds.
const ChangeTextBytes = 1 << 10

// CutChange returns c, or a copy of it with every free-text field cut to
// ChangeTextBytes when one is longer: a change event can be as large as
// its own message, and messages that carry it along with more must fit.
func CutChange(c *nixbuspb.ChangeEvent) *nixbuspb.ChangeEvent {
	if c == nil || proto.Size(c) <= 16*ChangeTextBytes {
		return c
	}
	c = proto.Clone(c).(*nixbuspb.ChangeEvent)
	for _, s := range []*string{&c.EventId, &c.Project, &c.Ref, &c.Revision, &c.Branch, &c.RepoUrl, &c.LocalPath, &c.ChangeId, &c.Uploader} {
		*s = Truncate(*s, ChangeTextBytes)
	}
	return c
}
