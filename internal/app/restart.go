package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// restartCommand is `nixbus restart <run> <attr>`: the web page's "restart
// job" from a shell. It publishes the RestartJob the planner honours for a
// job whose build failed in a run that has ended (and was not cancelled):
// the job is built again, then what its failure skipped, and the run gets
// a new verdict, and a new vote if that changed (see nixbus status).
func restartCommand(ctx context.Context, args []string, stdout, stderr *os.File) error {
	fs := newFlagSet("restart", stderr)
	var o Options
	o.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: nixbus restart [flags] <run> <attr>")
	}
	runID, attr := fs.Arg(0), fs.Arg(1)
	if o.NATSURL == "" {
		return errors.New("--nats.url is required: restart publishes to a running nixbus")
	}
	if err := o.NATSAuth.validate(o.NATSURL); err != nil {
		return err
	}
	auth, err := o.NATSAuth.options()
	if err != nil {
		return err
	}
	inst := &Instance{url: o.NATSURL, auth: auth, role: bus.RoleAdmin, logger: o.Logger(stderr)}
	defer inst.close()
	nc, err := inst.connect("restart")
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	m, err := restartRequest(ctx, js, runID, attr)
	if err != nil {
		return err
	}
	pub := bus.NewPublisher(js, inst.logger)
	if err := pub.Publish(ctx, bus.RunSubject(runID, bus.RunRestartKind), bus.MsgIDRestart(runID, m.GetDrvPath(), m.GetRequestedUnixMs()), m, nil); err != nil {
		return fmt.Errorf("publish restart: %w", err)
	}
	fmt.Fprintf(stdout, "restart of %s in run %s requested (%s)\n", attr, runID, m.GetDrvPath())
	return nil
}

// restartRequest finds attr's derivation among the run's jobs.
func restartRequest(ctx context.Context, js jetstream.JetStream, runID, attr string) (*nixbuspb.RestartJob, error) {
	if !bus.ValidRunID(runID) {
		return nil, fmt.Errorf("%q is not a run id", runID)
	}
	var (
		drv       string
		cancelled bool
	)
	filters := []string{bus.RunSubject(runID, bus.RunJobKind), bus.RunSubject(runID, bus.RunCancelKind)}
	_, err := bus.ReadOrdered(ctx, js, bus.StreamRuns, filters, 0, func(msg jetstream.Msg) error {
		if msg.Subject() == filters[1] {
			cancelled = true
			return nil
		}
		var j nixbuspb.Job
		if bus.Decode(msg.Data(), &j) == nil && j.GetAttr() == attr {
			drv = j.GetDrvPath()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if cancelled {
		// Its builders refuse to build for it, and the planner to restart.
		return nil, fmt.Errorf("run %s was cancelled: its jobs cannot be restarted", runID)
	}
	if drv == "" {
		return nil, fmt.Errorf("run %s has no job %q with a derivation", runID, attr)
	}
	return &nixbuspb.RestartJob{RunId: runID, Attr: attr, DrvPath: drv, RequestedBy: "nixbus restart", RequestedUnixMs: time.Now().UnixMilli()}, nil
}
