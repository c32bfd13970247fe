package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func logsCommand(ctx context.Context, args []string, stdout, stderr *os.File) error {
	fs, o := opsFlags("logs", stderr)
	follow := fs.Bool("f", false, "follow the live log until the build ends")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	// Allow -f after the arguments too: nixbus logs <run> <attr> -f.
	if len(rest) == 3 && rest[2] == "-f" {
		*follow, rest = true, rest[:2]
	}
	if len(rest) != 2 {
		return fmt.Errorf("want <run> <attr>, got %q", rest)
	}
	js, done, err := opsJetStream(*o, "logs", stderr)
	if err != nil {
		return err
	}
	defer done()
	runID, attr := rest[0], rest[1]
	drv, err := jobDrv(ctx, js, runID, attr)
	if err != nil {
		return err
	}
	if *follow {
		return followLog(ctx, js, runID, drv, stdout, 0)
	}
	store, err := js.ObjectStore(ctx, bus.LogBucket)
	if err != nil {
		return fmt.Errorf("open logs: %w", err)
	}
	obj, err := store.Get(ctx, bus.LogKey(runID, drv))
	if err != nil {
		return fmt.Errorf("log of %s: %w (a running build's log: use -f)", printable(attr), err)
	}
	defer obj.Close()
	if _, err := io.Copy(stdout, obj); err != nil {
		return fmt.Errorf("log of %s: %w", printable(attr), err)
	}
	return nil
}

// jobDrv finds the derivation of attr in run from the run's job messages.
func jobDrv(ctx context.Context, js jetstream.JetStream, runID, attr string) (string, error) {
	var drv string
	var evalErr string
	_, err := bus.ReadOrdered(ctx, js, bus.StreamRuns, []string{bus.RunSubject(runID, bus.RunJobKind)}, 0, func(m jetstream.Msg) error {
		var j nixbuspb.Job
		if bus.Decode(m.Data(), &j) == nil && j.GetAttr() == attr {
			drv, evalErr = j.GetDrvPath(), j.GetEvalError()
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if drv == "" && evalErr != "" {
		return "", fmt.Errorf("%s did not evaluate: %s", printable(attr), printable(oneLine(evalErr)))
	}
	if drv == "" {
		return "", fmt.Errorf("no job %s in run %s", printable(attr), printable(runID))
	}
	return drv, nil
}

// followLog copies the live log chunks of drv's build to w until the
// final chunk of an attempt. When a newer attempt starts, it says so and
// goes on with that one. A silence of any length is waited out: each pull
// lasts expiry (0: nats.go's 30 s) and is renewed until the final chunk.
func followLog(ctx context.Context, js jetstream.JetStream, runID, drv string, w io.Writer, expiry time.Duration) error {
	cons, err := js.OrderedConsumer(ctx, bus.StreamLogs, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.LogSubject(runID, drv)}})
	if err != nil {
		return fmt.Errorf("follow log: %w", err)
	}
	var opts []jetstream.PullMessagesOpt
	if expiry > 0 {
		opts = append(opts, jetstream.PullExpiry(expiry))
	}
	it, err := cons.Messages(opts...)
	if err != nil {
		return fmt.Errorf("follow log: %w", err)
	}
	defer it.Stop()
	// The iterator does not watch ctx: stop it when ctx ends.
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var restart, delivery uint64
	started := false
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("follow log: %w", err)
		}
		var c nixbuspb.LogChunk
		if err := bus.Decode(msg.Data(), &c); err != nil {
			return err
		}
		if !started || c.GetRestartSeq() != restart || c.GetDelivery() != delivery {
			if started {
				fmt.Fprintf(w, "\n--- a new attempt (restart %d, delivery %d) ---\n", c.GetRestartSeq(), c.GetDelivery())
			}
			started, restart, delivery = true, c.GetRestartSeq(), c.GetDelivery()
		}
		if _, err := w.Write(c.GetData()); err != nil {
			return err
		}
		if c.GetFinal() {
			if c.GetTruncated() {
				fmt.Fprintln(w, "\n(live log truncated: the full log is in the object store, `nixbus logs` without -f)")
			}
			return nil
		}
	}
}
