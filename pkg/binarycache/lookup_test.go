package binarycache

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	pHave    = "/nix/store/0a3b1vz1k9q2y4w5x6c7d8f9g0h1i2j3-have"
	pMissing = "/nix/store/1a3b1vz1k9q2y4w5x6c7d8f9g0h1i2j3-missing"
	pDenied  = "/nix/store/2a3b1vz1k9q2y4w5x6c7d8f9g0h1i2j3-denied"
	pFlaky   = "/nix/store/3a3b1vz1k9q2y4w5x6c7d8f9g0h1i2j3-flaky"
	pBroken  = "/nix/store/4a3b1vz1k9q2y4w5x6c7d8f9g0h1i2j3-broken"
	pBogus   = "/etc/passwd"
)

// cacheServer answers HEAD <hash>.narinfo as a binary cache (or S3) would:
// 200 for what it has, 404 or 403 for what it lacks; the flaky path fails
// once, the broken one always.
func cacheServer(t *testing.T, tls bool) (*httptest.Server, *sync.Map) {
	t.Helper()
	var seen sync.Map
	var flakyOnce sync.Once
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.URL.Path, r.Method)
		switch strings.TrimPrefix(r.URL.Path, "/cache/") {
		case NarinfoKey(pHave):
			w.WriteHeader(http.StatusOK)
		case NarinfoKey(pDenied):
			w.WriteHeader(http.StatusForbidden)
		case NarinfoKey(pFlaky):
			failed := false
			flakyOnce.Do(func() { failed = true })
			if failed {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			w.WriteHeader(http.StatusOK)
		case NarinfoKey(pBroken):
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	srv := httptest.NewUnstartedServer(h)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestCheckerHTTP(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[useTLS], func(t *testing.T) {
			srv, seen := cacheServer(t, useTLS)
			var cfg S3Config
			if useTLS {
				ca := filepath.Join(t.TempDir(), "ca.pem")
				require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644))
				cfg.CAFile = ca
			}
			loc, err := Parse(srv.URL + "/cache/")
			require.NoError(t, err)
			c, err := NewChecker(loc, cfg, 4)
			require.NoError(t, err)
			c.retryDelay = 0
			defer c.Close()

			res, err := c.Have(t.Context(), []string{pHave, pMissing, pDenied, pFlaky, pBroken, pBogus})
			require.NoError(t, err)
			require.Equal(t, map[string]bool{pHave: true, pMissing: false, pDenied: false, pFlaky: true, pBroken: false, pBogus: false}, res.Have)
			require.Equal(t, 1, res.Errors, "only the path the cache never answers for is an error")
			require.ErrorContains(t, res.Err, "500")
			method, ok := seen.Load("/cache/" + NarinfoKey(pHave))
			require.True(t, ok)
			require.Equal(t, http.MethodHead, method)
			_, asked := seen.Load("/cache/passwd.narinfo")
			require.False(t, asked, "what is not a store path is not asked about")
		})
	}
}

func TestCheckerHTTPSUntrusted(t *testing.T) {
	srv, _ := cacheServer(t, true)
	loc, err := Parse(srv.URL)
	require.NoError(t, err)
	c, err := NewChecker(loc, S3Config{}, 2)
	require.NoError(t, err)
	c.retryDelay = 0
	defer c.Close()
	res, err := c.Have(t.Context(), []string{pHave})
	require.NoError(t, err)
	require.False(t, res.Have[pHave], "a cache whose certificate is not trusted is not believed")
	require.Equal(t, 1, res.Errors)
}

func TestCheckerFile(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, NarinfoKey(pHave)), []byte("StorePath: "+pHave+"\n"), 0o644))
	loc, err := Parse("file://" + dir)
	require.NoError(t, err)
	c, err := NewChecker(loc, S3Config{}, 2)
	require.NoError(t, err)
	res, err := c.Have(t.Context(), []string{pHave, pMissing, pBogus})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{pHave: true, pMissing: false, pBogus: false}, res.Have)
	require.Zero(t, res.Errors)

	nix, err := NewChecker(Location{Kind: KindNix}, S3Config{}, 2)
	require.NoError(t, err)
	require.Nil(t, nix, "nix itself asks stores nixbus does not read")
}
