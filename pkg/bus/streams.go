package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions are the operator's knobs for the streams nixbus creates.
type StreamOptions struct {
	// DuplicateWindow is how long JetStream remembers message ids. Replays
	// after a restart within it publish nothing twice.
	DuplicateWindow time.Duration
	// MaxAge bounds how long run history is kept.
	MaxAge time.Duration
	// Replicas for clustered NATS; 1 on one machine.
	Replicas int
	// Memory stores streams in memory instead of on disk (benchmarks only).
	Memory bool
}

// DefaultStreamOptions are what a single-machine install wants.
func DefaultStreamOptions() StreamOptions {
	return StreamOptions{DuplicateWindow: 2 * time.Hour, MaxAge: 7 * 24 * time.Hour, Replicas: 1}
}

// EnsureStreams creates every stream and bucket nixbus uses. Every service
// calls it on start with zero options, so any of them may come up first:
// that only creates what is missing, with defaults. The process that owns
// the operator's settings passes them, which also updates existing streams.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	update := o != (StreamOptions{})
	if !update {
		o = DefaultStreamOptions()
	}
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	dup := o.DuplicateWindow
	if dup > o.MaxAge && o.MaxAge > 0 {
		dup = o.MaxAge
	}
	streams := []jetstream.StreamConfig{
		{Name: StreamChanges, Subjects: []string{ChangeAll}, Retention: jetstream.WorkQueuePolicy},
		{Name: StreamRuns, Subjects: []string{RunAll}, Retention: jetstream.LimitsPolicy},
		{Name: StreamBuilds, Subjects: []string{BuildAll}, Retention: jetstream.WorkQueuePolicy},
		{Name: StreamReports, Subjects: []string{OutcomeAll, VerdictAll, UploadAll, ReviewAll}, Retention: jetstream.LimitsPolicy},
	}
	// Live logs matter while a build runs; its stored log replaces them.
	logAge := min(o.MaxAge, 24*time.Hour)
	if logAge <= 0 {
		logAge = 24 * time.Hour
	}
	streams = append(streams, jetstream.StreamConfig{Name: StreamLogs, Subjects: []string{LogAll}, Retention: jetstream.LimitsPolicy, MaxAge: logAge})
	for _, sc := range streams {
		sc.Storage = storage
		if sc.MaxAge == 0 {
			sc.MaxAge = o.MaxAge
		}
		sc.Duplicates = dup
		if sc.MaxAge > 0 {
			sc.Duplicates = min(dup, sc.MaxAge)
		}
		sc.Replicas = max(o.Replicas, 1)
		sc.MaxMsgSize = MaxMessageSize
		if !update {
			if _, err := js.Stream(ctx, sc.Name); err == nil {
				continue
			}
		}
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
	}
	kvs := []jetstream.KeyValueConfig{
		{Bucket: PlannerBucket, Description: "planner checkpoints and the newest run of each change", Storage: storage, Replicas: max(o.Replicas, 1)},
		{Bucket: VotesBucket, Description: "runs the reporter has voted on", Storage: storage, Replicas: max(o.Replicas, 1), TTL: o.MaxAge},
	}
	for _, kc := range kvs {
		if !update {
			if _, err := js.KeyValue(ctx, kc.Bucket); err == nil {
				continue
			}
		}
		if _, err := js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return fmt.Errorf("ensure bucket %s: %w", kc.Bucket, err)
		}
	}
	oc := jetstream.ObjectStoreConfig{Bucket: LogBucket, Description: "build logs", Storage: storage, Replicas: max(o.Replicas, 1), TTL: o.MaxAge}
	if !update {
		if _, err := js.ObjectStore(ctx, oc.Bucket); err == nil {
			return nil
		}
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, oc); err != nil {
		return fmt.Errorf("ensure bucket %s: %w", LogBucket, err)
	}
	return nil
}

// MaxMessageSize is the design's limit for any message on the bus.
const MaxMessageSize = 1 << 20

// IsNotFound reports whether err means a key, message or object is absent.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrMsgNotFound) ||
		errors.Is(err, jetstream.ErrObjectNotFound)
}
