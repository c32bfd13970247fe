package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// LastRunMessage looks up the newest message of kind (RunStartedKind,
// RunCancelKind, ...) that run has on the runs stream, decoding it into m
// when m is not nil. It reports false, and no error, when there is none.
// The sequence orders runs by when the message was stored.
func LastRunMessage(ctx context.Context, runs jetstream.Stream, runID, kind string, m proto.Message) (found bool, seq uint64, err error) {
	msg, err := runs.GetLastMsgForSubject(ctx, RunSubject(runID, kind))
	if IsNotFound(err) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("look up %s of run %s: %w", kind, runID, err)
	}
	if m != nil {
		if err := Decode(msg.Data, m); err != nil {
			return false, 0, fmt.Errorf("%s of run %s: %w", kind, runID, err)
		}
	}
	return true, msg.Sequence, nil
}

// LastVerdict looks up run's newest verdict on the reports stream (the
// one of the highest revision: a restart's verdict comes after the run's
// first), decoding it into v. It reports false, and no error, when there
// is none or it cannot be decoded.
func LastVerdict(ctx context.Context, reports jetstream.Stream, runID string, v *nixbuspb.RunVerdict) (bool, error) {
	msg, err := reports.GetLastMsgForSubject(ctx, VerdictSubject(runID))
	if IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up verdict of run %s: %w", runID, err)
	}
	return Decode(msg.Data, v) == nil, nil
}
