package bus_test

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
)

// TestReadOrderedRidesOutALeaderChange: the stream's leader (and with it
// the ordered consumer) goes away in the middle of a read; ReadOrdered
// goes on with the new leader, losing and repeating none. Tests read
// through it too (natstest.TryRead), and the cluster e2e test needs this.
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
