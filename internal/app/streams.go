package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natsembed"
)

// streamsCommand is the owner of stream settings: `show` compares what the
// server has with the flags, `apply` changes it to them.
func streamsCommand(ctx context.Context, args []string, stdout, stderr *os.File) error {
	fs := newFlagSet("streams", stderr)
	var o Options
	o.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: nixbus streams [flags] show|apply\n\n"+
			"show: every stream and bucket with its settings and consumers, and how it differs from the --nats.* flags.\n"+
			"apply: change existing streams and buckets to the flags (create missing ones). Run it as the admin role.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "show" && fs.Arg(0) != "apply") {
		fs.Usage()
		return errors.New("want show or apply")
	}
	if err := o.Validate(); err != nil {
		return err
	}
	js, done, err := adminJetStream(o)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if fs.Arg(0) == "apply" {
		if err := bus.ApplyStreams(ctx, js, o.Streams, buckets(nil)...); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "applied")
	}
	diffs, err := bus.CheckStreams(ctx, js, o.Streams, buckets(nil)...)
	if err != nil {
		return err
	}
	return showStreams(ctx, js, diffs, stdout)
}

// adminJetStream connects to the external NATS with the flags'
// credentials, or starts the embedded server on the state dir.
func adminJetStream(o Options) (jetstream.JetStream, func(), error) {
	opts, err := o.NATSAuth.options()
	if err != nil {
		return nil, nil, err
	}
	opts = append(opts, nats.Name("nixbus-streams"))
	url, stop := o.NATSURL, func() {}
	if url == "" {
		dir := filepath.Join(o.StateDir, "nats")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, fmt.Errorf("create nats store: %w", err)
		}
		ns, err := natsembed.Start(natsembed.Options{StoreDir: dir})
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, nats.InProcessServer(ns))
		stop = func() { ns.Shutdown(); ns.WaitForShutdown() }
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("connect nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		stop()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, func() { nc.Close(); stop() }, nil
}

func showStreams(ctx context.Context, js jetstream.JetStream, diffs []bus.Mismatch, w io.Writer) error {
	for name := range js.StreamNames(ctx).Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		info := s.CachedInfo()
		c := info.Config
		fmt.Fprintf(w, "%s: max-age %s, duplicate-window %s, replicas %d, %s, %d messages", name, c.MaxAge, c.Duplicates, c.Replicas, c.Storage, info.State.Msgs)
		if info.Cluster != nil && info.Cluster.Leader != "" {
			fmt.Fprintf(w, ", leader %s", info.Cluster.Leader)
		}
		fmt.Fprintln(w)
		for ci := range s.ListConsumers(ctx).Info() {
			cc := ci.Config
			if cc.Durable == "" {
				continue // ordered consumers come and go
			}
			fmt.Fprintf(w, "  consumer %s: filter %s, deliver %s, ack-wait %s, %d pending, %d unacked\n",
				ci.Name, cc.FilterSubject, cc.DeliverPolicy, cc.AckWait, ci.NumPending, ci.NumAckPending)
		}
	}
	for _, d := range diffs {
		fmt.Fprintf(w, "differs: %s\n", d)
	}
	if len(diffs) > 0 {
		fmt.Fprintln(w, "(`nixbus streams apply` with these flags changes them)")
	}
	return nil
}
