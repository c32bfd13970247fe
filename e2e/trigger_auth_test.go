package e2e

import (
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natsauth"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestTriggerWithCredentials: an operator triggers a run on a NATS that
// refuses anonymous clients with the admin role's secret, as the README's
// deployments do; without it the trigger is refused.
func TestTriggerWithCredentials(t *testing.T) {
	srv, dir := startSecured(t, natsauth.Nkey)
	_, admin, _ := asRole(t, srv, dir, bus.RoleAdmin)
	require.NoError(t, bus.EnsureStreams(t.Context(), admin, bus.StreamOptions{}))
	flake := t.TempDir()

	code, out, errOut := mainOut(t, "trigger", "--nats.url", srv.URL, "--project", "example", "--local-path", flake)
	require.Equal(t, 1, code, out+errOut)
	require.Contains(t, errOut, "Authorization Violation")

	code, out, errOut = mainOut(t, "trigger", "--nats.url", srv.URL, "--nats.nkey-file", natsauth.SecretFile(dir, natsauth.Nkey, bus.RoleAdmin),
		"--project", "example", "--local-path", flake)
	require.Equal(t, 0, code, out+errOut)
	stream, err := admin.Stream(t.Context(), bus.StreamChanges)
	require.NoError(t, err)
	msg, err := stream.GetLastMsgForSubject(t.Context(), bus.ChangeSubject("example"))
	require.NoError(t, err)
	var ev nixbuspb.ChangeEvent
	require.NoError(t, bus.Decode(msg.Data, &ev))
	require.Equal(t, flake, ev.GetLocalPath())
}
