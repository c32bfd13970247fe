package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions are the operator's knobs for the streams nixbus creates.
type StreamOptions struct {
	// DuplicateWindow is how long JetStream remembers message ids. Replays
	// after a restart within it publish nothing twice; the default covers
	// the planner's default run deadline (12 h), the furthest back a
	// restart replays, with an hour to spare.
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
	return StreamOptions{DuplicateWindow: 13 * time.Hour, MaxAge: 7 * 24 * time.Hour, Replicas: 1}
}

// Bucket is a KV bucket one service owns, declared by that service (its
// Access): the service creates it with EnsureStreams, and only `nixbus
// streams` (which gets every service's) looks at it otherwise.
type Bucket struct {
	Name, Description string
	// Expires drops keys after StreamOptions.MaxAge, with run history.
	Expires bool
	// KeyTTL lets each key expire on its own (jetstream.KeyTTL), and
	// watchers see it go.
	KeyTTL bool
	// Watched: its owner watches it (a KV watcher, an ordered push
	// consumer with flow control).
	Watched bool
}

// EnsureStreams creates the streams nixbus uses, the log store, and the
// caller's own buckets, those that are missing, with o (zero:
// DefaultStreamOptions). Every service calls it on start, so any of them
// may come up first. It never changes one that exists, whatever this
// process's flags say: settings have one owner, the operator, who changes
// them with ApplyStreams (`nixbus streams apply`,
// --nats.apply-stream-config). CheckStreams also says how they differ.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions, buckets ...Bucket) error {
	_, err := CheckStreams(ctx, js, o, buckets...)
	return err
}

// Mismatch is a setting of an existing stream or bucket that differs from
// what the operator's flags ask for.
type Mismatch struct {
	Stream, Setting string
	Have, Want      string
}

func (m Mismatch) String() string {
	return fmt.Sprintf("%s %s is %s, flags ask for %s", m.Stream, m.Setting, m.Have, m.Want)
}

// CheckStreams is EnsureStreams, and returns how the settings of the
// streams and buckets that already existed differ from o.
func CheckStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions, buckets ...Bucket) ([]Mismatch, error) {
	var out []Mismatch
	for _, it := range streamItems(o, buckets) {
		s, err := js.Stream(ctx, it.name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if err := it.create(ctx, js); err != nil {
				return out, err
			}
			continue
		}
		if err != nil {
			return out, fmt.Errorf("look up stream %s: %w", it.name, err)
		}
		out = append(out, it.diff(s.CachedInfo().Config)...)
	}
	return out, nil
}

// ApplyStreams creates every stream nixbus uses, the log store and
// buckets, or updates it, to o: the operator's act, never a service's.
func ApplyStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions, buckets ...Bucket) error {
	for _, it := range streamItems(o, buckets) {
		var err error
		switch {
		case it.kv != nil:
			_, err = js.CreateOrUpdateKeyValue(ctx, *it.kv)
		case it.obj != nil:
			_, err = js.CreateOrUpdateObjectStore(ctx, *it.obj)
		default:
			_, err = js.CreateOrUpdateStream(ctx, *it.stream)
		}
		if err != nil {
			return fmt.Errorf("apply settings of %s: %w", it.name, err)
		}
	}
	return nil
}

// streamItem is one stream, or the stream behind one bucket, as o wants it.
type streamItem struct {
	name   string
	stream *jetstream.StreamConfig
	kv     *jetstream.KeyValueConfig
	obj    *jetstream.ObjectStoreConfig
	// The settings compared on an existing one.
	want jetstream.StreamConfig
}

func streamItems(o StreamOptions, buckets []Bucket) []streamItem {
	if o == (StreamOptions{}) {
		o = DefaultStreamOptions()
	}
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	replicas := max(o.Replicas, 1)
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
	var items []streamItem
	for _, sc := range streams {
		sc.Storage = storage
		if sc.MaxAge == 0 {
			sc.MaxAge = o.MaxAge
		}
		sc.Duplicates = dup
		if sc.MaxAge > 0 {
			sc.Duplicates = min(dup, sc.MaxAge)
		}
		sc.Replicas = replicas
		sc.MaxMsgSize = MaxMessageSize
		items = append(items, streamItem{name: sc.Name, stream: &sc, want: sc})
	}
	for _, b := range buckets {
		kc := jetstream.KeyValueConfig{Bucket: b.Name, Description: b.Description, Storage: storage, Replicas: replicas}
		if b.Expires {
			kc.TTL = o.MaxAge
		}
		if b.KeyTTL {
			kc.LimitMarkerTTL = time.Minute // how long an expired key's marker stays
		}
		items = append(items, streamItem{name: kvStream(kc.Bucket), kv: &kc,
			want: jetstream.StreamConfig{Storage: storage, Replicas: replicas, MaxAge: kc.TTL}})
	}
	oc := jetstream.ObjectStoreConfig{Bucket: LogBucket, Description: "build logs", Storage: storage, Replicas: replicas, TTL: o.MaxAge}
	items = append(items, streamItem{name: objStream(oc.Bucket), obj: &oc,
		want: jetstream.StreamConfig{Storage: storage, Replicas: replicas, MaxAge: oc.TTL}})
	return items
}

// create creates the missing item; one another process created meanwhile
// is left as it is.
func (it streamItem) create(ctx context.Context, js jetstream.JetStream) error {
	var err error
	switch {
	case it.kv != nil:
		_, err = js.CreateKeyValue(ctx, *it.kv)
		if errors.Is(err, jetstream.ErrBucketExists) {
			err = nil
		}
	case it.obj != nil:
		_, err = js.CreateObjectStore(ctx, *it.obj)
		if errors.Is(err, jetstream.ErrBucketExists) {
			err = nil
		}
	default:
		_, err = js.CreateStream(ctx, *it.stream)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", it.name, err)
	}
	return nil
}

// diff compares the settings operators choose; the rest is nixbus's own.
func (it streamItem) diff(have jetstream.StreamConfig) []Mismatch {
	var out []Mismatch
	add := func(setting string, h, w any) {
		if fmt.Sprint(h) != fmt.Sprint(w) {
			out = append(out, Mismatch{Stream: it.name, Setting: setting, Have: fmt.Sprint(h), Want: fmt.Sprint(w)})
		}
	}
	w := it.want
	add("max-age", have.MaxAge, w.MaxAge)
	add("replicas", have.Replicas, w.Replicas)
	add("storage", have.Storage, w.Storage)
	if it.stream != nil {
		add("duplicate-window", have.Duplicates, w.Duplicates)
		add("max-msg-size", have.MaxMsgSize, w.MaxMsgSize)
		for _, s := range w.Subjects {
			if !slices.Contains(have.Subjects, s) {
				out = append(out, Mismatch{Stream: it.name, Setting: "subjects", Have: strings.Join(have.Subjects, ","), Want: strings.Join(w.Subjects, ",")})
				break
			}
		}
	}
	return out
}

// MaxMessageSize is the design's limit for any message on the bus.
const MaxMessageSize = 1 << 20

// IsNotFound reports whether err means a key, message or object is absent.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrMsgNotFound) ||
		errors.Is(err, jetstream.ErrObjectNotFound)
}
