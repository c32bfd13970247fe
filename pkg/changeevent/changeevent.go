// Package changeevent makes and publishes the change events that start
// runs: Gerrit's (gerrit-ingest), and manual ones (`nixbus trigger`,
// `nixbus run`), with one id scheme and one root span shape.
package changeevent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/gerrit"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Options name what a manual run (`nixbus trigger`) evaluates: a
// patchset (Change and Patchset, or its Ref), or a branch (Branch, or Ref
// refs/heads/<branch>), of Project fetched from RepoURL.
type Options struct {
	Project  string
	Change   int64
	Patchset int32
	Ref      string
	Branch   string
	Revision string
	// RepoURL is where to fetch from, e.g. gerrit.SSHConfig.RepoURL(project).
	RepoURL string
	// LocalPath names a local flake checkout instead of a fetch.
	LocalPath string
	// EventID makes the trigger idempotent; empty: a fresh id, so every
	// trigger is a new run.
	EventID string
}

// Manual checks o and returns the change event of a manual run. A local
// path alone is enough (`nixbus run`); its project defaults to the
// directory's name.
func Manual(o Options) (*nixbuspb.ChangeEvent, error) {
	if o.Project == "" && o.LocalPath == "" {
		return nil, errors.New("trigger: a project (or a local path) is required")
	}
	if o.Change < 0 || o.Patchset < 0 {
		return nil, errors.New("trigger: change and patchset must be positive")
	}
	if o.Revision != "" && !gerrit.IsCommit(o.Revision) {
		return nil, fmt.Errorf("trigger: revision %q is not a full commit id", o.Revision)
	}
	switch {
	case strings.HasPrefix(o.Ref, "refs/changes/"):
		change, ps, err := gerrit.ParseChangeRef(o.Ref)
		if err != nil {
			return nil, fmt.Errorf("trigger: %w", err)
		}
		if (o.Change != 0 && o.Change != change) || (o.Patchset != 0 && o.Patchset != ps) {
			return nil, fmt.Errorf("trigger: ref %s is not change %d patchset %d", o.Ref, o.Change, o.Patchset)
		}
		o.Change, o.Patchset = change, ps
	case o.Ref != "":
		if err := gerrit.CheckRef(o.Ref); err != nil {
			return nil, fmt.Errorf("trigger: %w", err)
		}
		o.Branch = strings.TrimPrefix(o.Ref, "refs/heads/")
	case o.Change > 0 && o.Patchset > 0:
		o.Ref = gerrit.ChangeRef(o.Change, o.Patchset)
	case o.Change > 0:
		return nil, errors.New("trigger: a change needs its patchset")
	case o.Branch != "":
		ref, err := gerrit.BranchRef(o.Branch)
		if err != nil {
			return nil, fmt.Errorf("trigger: %w", err)
		}
		o.Ref, o.Branch = ref, strings.TrimPrefix(ref, "refs/heads/")
	case o.LocalPath == "":
		return nil, errors.New("trigger: name a change and patchset, a ref or a branch")
	}
	if o.Project == "" {
		o.Project = filepath.Base(o.LocalPath)
	}
	if o.RepoURL == "" && o.LocalPath == "" {
		return nil, errors.New("trigger: a repository URL (or a local path) is required")
	}
	id := o.EventID
	if id == "" {
		var err error
		if id, err = newID(); err != nil {
			return nil, fmt.Errorf("trigger: %w", err)
		}
	}
	return &nixbuspb.ChangeEvent{
		EventId: id, Kind: nixbuspb.ChangeEvent_KIND_MANUAL, Project: o.Project, Change: o.Change, Patchset: o.Patchset,
		Ref: o.Ref, Revision: o.Revision, Branch: o.Branch, RepoUrl: o.RepoURL, LocalPath: o.LocalPath,
		CreatedUnix: time.Now().Unix(),
	}, nil
}

// Again returns the change event of a manual run of prev's change again
// (the status pages' "run again"): prev's change, patchset or ref, with a
// new id in Manual's scheme, so it is a new run.
func Again(prev *nixbuspb.ChangeEvent) (*nixbuspb.ChangeEvent, error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	ev := proto.CloneOf(prev)
	ev.EventId, ev.Kind, ev.CreatedUnix = id, nixbuspb.ChangeEvent_KIND_MANUAL, time.Now().Unix()
	return ev, nil
}

// newID is a manual event's id: random, so every trigger is a new run,
// and naming nothing (no path or user).
func newID() (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("event id: %w", err)
	}
	return "manual-" + hex.EncodeToString(b[:]), nil
}

// Attrs are the attributes of the root span of ev's run: the span of
// publishing it here, or of whatever else publishes it (nixbus run).
func Attrs(ev *nixbuspb.ChangeEvent, extra ...attribute.KeyValue) []attribute.KeyValue {
	attrs := append(bus.ChangeAttrs(ev),
		bus.AttrRun.String(bus.RunID(ev.GetEventId())),
		attribute.String("nixbus.event_id", ev.GetEventId()),
		attribute.String("nixbus.event_kind", ev.GetKind().String()),
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingDestinationName(bus.ChangeSubject(ev.GetProject())),
	)
	return append(attrs, extra...)
}

// Publish publishes a change event made by Manual. The event
// carries the span context of ctx, if any: the caller's span is the root
// of the run's trace.
func Publish(ctx context.Context, js jetstream.JetStream, ev *nixbuspb.ChangeEvent) error {
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		return fmt.Errorf("publish change event: %w", err)
	}
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))
	if err := pub.Publish(ctx, bus.ChangeSubject(ev.GetProject()), bus.MsgIDChange(ev.GetEventId()), ev, nil); err != nil {
		return fmt.Errorf("publish change event: %w", err)
	}
	return nil
}
