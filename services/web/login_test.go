package web

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/oidctest"
	"nixbus.dev/nixbus/pkg/bus"
)

// login goes through the provider's code flow as name and returns the
// client holding the session, and the page it landed on.
func login(t *testing.T, f *fixture, name, next string) (*http.Client, string) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(f.srv.URL + "/login?next=" + url.QueryEscape(next))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode, "the provider's login form")
	form := resp.Request.URL.Query() // the form posts the authorization request back
	form.Set("login", name)
	authorize := *resp.Request.URL
	authorize.RawQuery = ""
	code, body := post(t, c, authorize.String(), form)
	require.Equal(t, http.StatusOK, code, body)
	return c, body
}

func post(t *testing.T, c *http.Client, u string, form url.Values) (int, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	require.NoError(t, err)
	defer func() { require.NoError(t, resp.Body.Close()) }()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(data)
}

func TestLoginWithOIDC(t *testing.T) {
	var op *oidctest.Provider
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte("s3cret\n"), 0o600))
	f := startAt(t, func(base string) Config {
		op = oidctest.Start(t, oidctest.Client{ID: "nixbus", Secret: "s3cret", RedirectURI: base + "/auth/callback"}, map[string]oidctest.User{
			"alice": {Subject: "alice-sub", Email: "alice@example.org"},
			"bob":   {Subject: "bob-sub", Email: "bob@example.org"},
			"carol": {Subject: "carol-sub", Email: "carol@example.org", Groups: []string{"ci-admins"}},
		})
		cfg := testConfig()
		cfg.BaseURL, cfg.Issuer, cfg.ClientSecretFile = base, op.Issuer(), secret
		cfg.Admins, cfg.AdminGroup, cfg.GroupsClaim = []string{"alice@example.org"}, "ci-admins", "groups"
		return cfg
	})
	f.finishedRun(t, "rdone")
	restart := `action="/runs/rdone/jobs/` + bus.DrvBase(drvBroken) + `/restart"`

	tests := []struct {
		name  string
		admin bool
		press bool // presses restart on the failed job
	}{{"bob", false, false}, {"alice", true, true}, {"carol", true, false}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, body := login(t, f, tt.name, "/runs/rdone")
			require.Contains(t, body, "Run rdone", "back where the login started")
			require.Contains(t, body, tt.name)
			if !tt.admin {
				require.NotContains(t, body, restart)
				require.NotContains(t, body, "(admin)")
				require.NotContains(t, body, `id="restart-run"`)
				return
			}
			require.Contains(t, body, tt.name+" (admin)")
			require.Contains(t, body, `id="restart-run"`)
			if !tt.press {
				return
			}
			require.Contains(t, body, restart)
			// The button works: its form carries the session's token.
			i := strings.Index(body, restart)
			tok := body[i:]
			tok = tok[strings.Index(tok, `name="csrf" value="`)+len(`name="csrf" value="`):]
			tok = tok[:strings.IndexByte(tok, '"')]
			code, _ := post(t, c, f.srv.URL+"/runs/rdone/jobs/"+bus.DrvBase(drvBroken)+"/restart", url.Values{"csrf": {tok}})
			require.Equal(t, http.StatusOK, code, "redirected to the job page")
		})
	}

	t.Run("forged callback", func(t *testing.T) {
		jar, err := cookiejar.New(nil)
		require.NoError(t, err)
		c := &http.Client{Jar: jar}
		resp, err := c.Get(f.srv.URL + "/login")
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		code, body := get(t, c, f.srv.URL+"/auth/callback?code=stolen&state=guessed")
		require.Equal(t, http.StatusForbidden, code)
		require.Contains(t, body, "Login failed")
		_, body = get(t, c, f.srv.URL+"/runs/rdone")
		require.NotContains(t, body, "Log out")
	})
}
