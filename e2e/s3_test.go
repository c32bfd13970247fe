package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/pkg/binarycache"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// minioServer is a real MinIO on 127.0.0.1 (NIXBUS_MINIO_BIN, which `make
// test-s3` builds once with scripts/minio.sh).
type minioServer struct {
	addr, user, password string
}

func startMinIO(t *testing.T) *minioServer {
	t.Helper()
	bin := os.Getenv("NIXBUS_MINIO_BIN")
	if bin == "" {
		t.Skip("NIXBUS_MINIO_BIN is not set: `make test-s3` builds MinIO and runs this test")
	}
	m := &minioServer{addr: freeAddr(t), user: "nixbus-test", password: "nixbus-test-secret-1"}
	cmd := exec.Command(bin, "server", "--quiet", "--address", m.addr, "--console-address", freeAddr(t), t.TempDir())
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.user, "MINIO_ROOT_PASSWORD="+m.password,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("minio:\n%s", tail(out.String(), 30))
		}
	})
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://" + m.addr + "/minio/health/ready")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, time.Minute, 50*time.Millisecond, "minio did not start")
	return m
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// bucket creates a bucket anyone may read over HTTP (as a public binary
// cache is), and returns its s3:// URL and credential files.
func (m *minioServer) bucket(t *testing.T, name string) (url string, s3 binarycache.S3Config, b *binarycache.Bucket) {
	t.Helper()
	dir := t.TempDir()
	s3 = binarycache.S3Config{AccessKeyFile: filepath.Join(dir, "access"), SecretKeyFile: filepath.Join(dir, "secret"), Timeout: time.Minute}
	require.NoError(t, os.WriteFile(s3.AccessKeyFile, []byte(m.user+"\n"), 0o600))
	require.NoError(t, os.WriteFile(s3.SecretKeyFile, []byte(m.password+"\n"), 0o600))
	url = "s3://" + name + "?endpoint=" + m.addr + "&scheme=http&region=us-east-1"
	loc, err := binarycache.Parse(url)
	require.NoError(t, err)
	b, err = binarycache.OpenS3(loc, s3)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	require.NoError(t, b.Client().MakeBucket(t.Context(), name, minio.MakeBucketOptions{Region: "us-east-1"}))
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/*"]}]}`, name)
	require.NoError(t, b.Client().SetBucketPolicy(t.Context(), name, policy))
	return url, s3, b
}

// TestS3Cache runs a flake through nixbus with an S3 cache on a real MinIO,
// then proves with Nix itself that the cache is good: a fresh store
// substitutes every built output from the bucket over HTTP, trusting only
// the CI's key with signatures required, and refuses a tampered narinfo.
// A second run of the same flake finds everything cached in the bucket.
func TestS3Cache(t *testing.T) {
	m := startMinIO(t)
	cacheURL, s3, bucket := m.bucket(t, "nixbus-cache")
	srv := natstest.Start(t)
	state := t.TempDir()
	var c app.Configs
	fs := newFlagSet()
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{
		"--reporter.log-base-url", "http://ci.example/logs", "--reporter.retry-delay", "100ms",
		"--cache-uploader.cache-url", cacheURL,
		"--cache-uploader.s3-access-key-file", s3.AccessKeyFile, "--cache-uploader.s3-secret-key-file", s3.SecretKeyFile,
	}))
	ctx, cancel := context.WithCancel(t.Context())
	inst, err := app.Start(ctx, testOptions(t, srv.URL, state), &c, io.Discard, logger(t))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		require.NoError(t, inst.Wait())
	})

	dir := flake(t, map[string]string{
		"base": "echo base > $out", "top": "cat ${base} > $out; echo ${base} >> $out",
		"other": "mkdir -p $out/bin; echo other > $out/bin/other",
	})
	res, js := follow(t, srv, dir)
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, res.Verdict.GetStatus())
	require.EqualValues(t, 3, res.Verdict.GetSucceededCount())
	require.Equal(t, 1, int(res.Review.GetVerified()), res.Review.GetMessage())
	var outputs []string
	for _, r := range buildResults(t, js, res.RunID) {
		for _, p := range r.GetOutputs() {
			outputs = append(outputs, p)
		}
	}
	require.Len(t, outputs, 3)
	for _, u := range res.Uploads {
		require.True(t, u.GetOk(), u.GetError())
	}
	has, err := bucket.Has(t.Context(), "nix-cache-info")
	require.NoError(t, err)
	require.True(t, has)
	pub, err := os.ReadFile(filepath.Join(state, "keys", "nixbus-cache.sec.pub"))
	require.NoError(t, err)
	httpCache := "http://" + m.addr + "/nixbus-cache"

	// A fresh store substitutes every output, signatures required.
	store := t.TempDir()
	out, err := substitute(t, store, httpCache, strings.TrimSpace(string(pub)), outputs)
	require.NoError(t, err, out)
	for _, p := range outputs {
		_, err := os.Lstat(filepath.Join(store, p))
		require.NoError(t, err, "%s substituted into the fresh store", p)
	}
	// Another key: refused.
	_, err = substitute(t, t.TempDir(), httpCache, "other-1:"+strings.SplitN(strings.TrimSpace(string(pub)), ":", 2)[1], outputs[:1])
	require.Error(t, err, "outputs signed by another key are refused")

	// A narinfo tampered with in the bucket: refused.
	victim := outputs[0]
	key := binarycache.NarinfoKey(victim)
	obj, err := bucket.Client().GetObject(t.Context(), bucket.Name(), key, minio.GetObjectOptions{})
	require.NoError(t, err)
	orig, err := io.ReadAll(obj)
	require.NoError(t, err)
	require.NoError(t, obj.Close())
	require.Contains(t, string(orig), "Sig: nixbus-1:")
	require.Contains(t, string(orig), "Compression: xz")
	tampered := strings.Replace(string(orig), "NarSize: ", "NarSize: 1", 1)
	require.NoError(t, bucket.Put(t.Context(), key, strings.NewReader(tampered), int64(len(tampered)), "text/x-nix-narinfo"))
	out, err = substitute(t, t.TempDir(), httpCache, strings.TrimSpace(string(pub)), []string{victim})
	require.Error(t, err, "a tampered narinfo is refused")
	require.Contains(t, out, "is not signed by any of the keys", "refused for its signature")
	require.NoError(t, bucket.Put(t.Context(), key, bytes.NewReader(orig), int64(len(orig)), "text/x-nix-narinfo"))

	// The same flake again: the evaluator finds every output in the bucket.
	again, _ := follow(t, srv, dir)
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, again.Verdict.GetStatus())
	require.EqualValues(t, 3, again.Verdict.GetCachedCount(), "cached from the bucket")
	require.Zero(t, again.Verdict.GetSucceededCount())
}

// substitute realises paths in a fresh chroot store at root from the
// cache over HTTP alone, trusting only key, signatures required.
func substitute(t *testing.T, root, cache, key string, paths []string) (string, error) {
	t.Helper()
	args := append([]string{"--extra-experimental-features", "nix-command", "build", "--no-link", "--max-jobs", "0",
		"--store", root, "--option", "substituters", cache, "--option", "trusted-public-keys", key,
		"--option", "require-sigs", "true", "--option", "narinfo-cache-negative-ttl", "0",
		"--option", "narinfo-cache-positive-ttl", "0"}, paths...)
	cmd := exec.CommandContext(t.Context(), "nix", args...)
	// A fresh cache dir: no narinfo Nix remembers from another store.
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}
