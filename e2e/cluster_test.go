package e2e

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/internal/gerrittest"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natsauth"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/reporter"
)

// TestClusterSurvivesRunsLeaderLoss runs a Gerrit change on a 3-node
// JetStream cluster started from deploy/nats's configuration (with the
// users `nixbus nats-config` writes), with R3 streams and buckets and each
// service on its own role's user and on another node than the previous
// one. While a build runs, the node leading the runs stream is shut down:
// the run still completes with every job reported once, one verdict and
// one vote.
func TestClusterSurvivesRunsLeaderLoss(t *testing.T) {
	conf := t.TempDir()
	shipped, err := os.ReadFile(filepath.Join("..", "deploy", "nats", "nats-1.conf"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(conf, "nats.conf"), shipped, 0o644))
	code, out, errOut := mainOut(t, "nats-config", "--dir", conf)
	require.Equal(t, 0, code, out+errOut)
	cl := natstest.StartCluster(t, 3, filepath.Join(conf, "nats.conf"))
	key := func(role string) string { return natsauth.SecretFile(conf, natsauth.Nkey, role) }

	// The operator makes every stream and bucket R3.
	code, out, errOut = mainOut(t, "streams", "--nats.url", cl.URLs(), "--nats.nkey-file", key(bus.RoleAdmin),
		"--state-dir", t.TempDir(), "--nats.replicas", "3", "apply")
	require.Equal(t, 0, code, out+errOut)
	admin, err := nats.NkeyOptionFromSeed(key(bus.RoleAdmin))
	require.NoError(t, err)
	_, js := cl.Nodes[0].Connect(t, admin)
	for _, name := range []string{bus.StreamRuns, bus.StreamBuilds, "KV_" + reporter.VotesBucket, "OBJ_" + bus.LogBucket} {
		s, err := js.Stream(t.Context(), name)
		require.NoError(t, err)
		require.Equal(t, 3, s.CachedInfo().Config.Replicas, name)
	}

	m := newMarks(t)
	g := gerrittest.Start(t, gerrittest.Options{})
	repo := g.CreateProject(t, "demo")
	ps := repo.UploadPatchset(t, 51, 1, flake(t, map[string]string{
		"gate":  m.script("gate", m.hold("gate")+"; echo gate > $out"),
		"after": "cat ${gate} > $out",
		"quick": "echo quick > $out",
		"bad":   "exit 1",
	}))

	state := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	var insts []*app.Instance
	for i, name := range app.Names() {
		node := cl.Nodes[i%len(cl.Nodes)]
		var o app.Options
		fs := newFlagSet()
		o.RegisterFlags(fs)
		require.NoError(t, fs.Parse([]string{"--nats.url", node.URL, "--nats.nkey-file", key(name), "--nats.replicas", "3",
			"--state-dir", state, "--nix.option", "substituters=", "--service", name}))
		c := testConfigs(t)
		cfs := newFlagSet()
		c.RegisterFlags(cfs)
		require.NoError(t, cfs.Parse(append([]string{"--reporter.log-base-url", "http://ci.example/logs", "--reporter.retry-delay", "100ms",
			"--builder.ack-wait", "5s", "--builder.retry-delay", "200ms"}, gerritFlags(g)...)))
		inst, err := app.Start(ctx, o, c, io.Discard, logger(t))
		require.NoError(t, err, name)
		insts = append(insts, inst)
	}
	t.Cleanup(func() {
		cancel()
		for _, inst := range insts {
			require.NoError(t, inst.Wait())
		}
	})
	g.Push(ps)

	m.wait(t, "gate", "started", 1)
	runs, err := js.Stream(t.Context(), bus.StreamRuns)
	require.NoError(t, err)
	info, err := runs.Info(t.Context())
	require.NoError(t, err)
	require.NotNil(t, info.Cluster)
	leader := cl.Node(info.Cluster.Leader)
	require.NotNil(t, leader, "leader %q", info.Cluster.Leader)
	t.Logf("stopping %s, leader of %s", leader.Name(), bus.StreamRuns)
	leader.Stop()
	m.release(t, "gate")

	// The test's own client goes to a node that is still up.
	for _, n := range cl.Nodes {
		if n != leader {
			_, js = n.Connect(t, admin)
			break
		}
	}
	// A new leader took over the runs stream, and the streams the test
	// reads answer (the lost node may have led the cluster's JetStream
	// API too: until a new one is elected, nothing answers).
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, name := range []string{bus.StreamRuns, bus.StreamReports} {
			s, err := js.Stream(t.Context(), name)
			require.NoError(c, err)
			info, err := s.Info(t.Context())
			require.NoError(c, err)
			require.NotNil(c, info.Cluster)
			assert.NotEmpty(c, info.Cluster.Leader, name)
			assert.NotEqual(c, leader.Name(), info.Cluster.Leader, "a new leader of %s took over", name)
		}
	}, time.Minute, 50*time.Millisecond)
	v := waitVerdict(t, js, 3*time.Minute)
	requireRunOnce(t, js, v, map[string]nixbuspb.JobStatus{
		"gate": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, "after": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED,
		"quick": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, "bad": nixbuspb.JobStatus_JOB_STATUS_FAILED,
	})
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	r := requireOneVote(t, g, js)
	require.Equal(t, "-1", r.Labels["Verified"], r.Raw)
}
