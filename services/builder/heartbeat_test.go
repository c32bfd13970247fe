package builder

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestBuilderAnnouncesItself: a builder sends BuilderAlive on
// nixbus.builder.<system> every heartbeat interval, which the planner
// needs to tell a system nobody serves from a busy one.
func TestBuilderAnnouncesItself(t *testing.T) {
	srv := natstest.Start(t)
	nc, _ := srv.Connect(t)
	sub, err := nc.SubscribeSync(bus.BuilderSubject("fake.system"))
	require.NoError(t, err)
	cfg := testConfig(t, "fake.system", "b7")
	cfg.Instant = true
	startBuilder(t, srv, cfg)
	for range 2 { // the first at once, then one per interval
		m, err := sub.NextMsg(10 * time.Second)
		require.NoError(t, err)
		var a nixbuspb.BuilderAlive
		require.NoError(t, bus.Decode(m.Data, &a))
		require.Equal(t, "fake.system", a.GetSystem())
		require.Equal(t, "b7", a.GetBuilder())
	}
}
