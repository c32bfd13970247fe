package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
)

// TestReadOrderedRidesOutALeaderChange: the stream's leader (and with it
// the ordered consumer) goes away in the middle of a read; ReadOrdered
// goes on with the new leader, losing and repeating none. Tests read
// through it too (natstest.TryRead), and the cluster e2e test needs this.
// Whether the cut reaches ReadOrdered depends on timing; the retry itself
// is pinned by TestReadOrderedGoesOnAfterACut.
func TestReadOrderedRidesOutALeaderChange(t *testing.T) {
	cl := natstest.StartCluster(t, 3, "")
	ctx := t.Context()
	_, js := cl.Nodes[0].Connect(t)
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3})
	require.NoError(t, err)
	const n = 1200 // more than one fetch of ReadOrdered
	for i := range n {
		_, err := js.Publish(ctx, "t.x", fmt.Appendf(nil, "%d", i))
		require.NoError(t, err)
	}
	info, err := s.Info(ctx)
	require.NoError(t, err)
	leader := cl.Node(info.Cluster.Leader)
	require.NotNil(t, leader)
	for _, node := range cl.Nodes {
		if node != leader {
			_, js = node.Connect(t)
			break
		}
	}

	var seqs []uint64
	last, err := bus.ReadOrdered(ctx, js, "T", []string{"t.x"}, 0, func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		seqs = append(seqs, md.Sequence.Stream)
		if len(seqs) == 1 {
			leader.Stop()
		}
		return nil
	})
	require.NoError(t, err)
	require.EqualValues(t, n, last)
	require.Len(t, seqs, n)
	for i, seq := range seqs {
		require.EqualValues(t, i+1, seq)
	}
}

// cutJS is a real JetStream whose ordered consumers' Fetch fails once,
// after the first, as a leader change cuts a read: the cluster test above
// cannot say when in the read the cut lands, or whether nats.go's ordered
// consumer rides it out by itself, so it misses a missing retry most runs.
type cutJS struct {
	jetstream.JetStream
	cut     error
	fetches int
}

func (j *cutJS) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := j.JetStream.OrderedConsumer(ctx, stream, cfg)
	return &cutConsumer{c, j}, err
}

type cutConsumer struct {
	jetstream.Consumer
	js *cutJS
}

func (c *cutConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	c.js.fetches++
	if c.js.fetches == 2 {
		return nil, c.js.cut
	}
	return c.Consumer.Fetch(n, opts...)
}

// TestReadOrderedGoesOnAfterACut: a read cut by either error a leader
// change gives goes on after the last message read, losing and repeating
// none; another error ends it.
func TestReadOrderedGoesOnAfterACut(t *testing.T) {
	srv := natstest.Start(t)
	ctx := t.Context()
	_, js := srv.Connect(t)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	require.NoError(t, err)
	const n = 1200 // more than one fetch of ReadOrdered
	for i := range n {
		_, err := js.Publish(ctx, "t.x", fmt.Appendf(nil, "%d", i))
		require.NoError(t, err)
	}
	for _, tc := range []struct {
		cut      error
		goesOn   bool
		wantLast uint64
	}{
		{fmt.Errorf("fetch: %w", nats.ErrNoResponders), true, n},
		{fmt.Errorf("fetch: %w", jetstream.ErrServerShutdown), true, n},
		{errors.New("something else"), false, 512},
	} {
		t.Run(tc.cut.Error(), func(t *testing.T) {
			cjs := &cutJS{JetStream: js, cut: tc.cut}
			var seqs []uint64
			last, err := bus.ReadOrdered(ctx, cjs, "T", []string{"t.x"}, 0, func(m jetstream.Msg) error {
				md, err := m.Metadata()
				if err != nil {
					return err
				}
				seqs = append(seqs, md.Sequence.Stream)
				return nil
			})
			require.GreaterOrEqual(t, cjs.fetches, 2, "the read was cut")
			if !tc.goesOn {
				require.ErrorIs(t, err, tc.cut)
				require.EqualValues(t, tc.wantLast, last)
				return
			}
			require.NoError(t, err)
			require.EqualValues(t, tc.wantLast, last)
			require.Equal(t, n, len(seqs), "messages read")
			for i, seq := range seqs {
				require.EqualValues(t, i+1, seq)
			}
		})
	}
}
