//go:build deploy

// The composed system, for real: `make test-deploy` builds the images
// (scripts/deploy-images.sh) and runs this test, which needs a Docker engine
// and docker-compose (scripts/docker-setup.sh). It is not part of `make test`.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natsauth"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/evaluator"
)

const (
	project   = "nixbustest"
	builders  = 3
	natsURL   = "nats://127.0.0.1:4222"
	jaegerURL = "http://127.0.0.1:16686"
)

// compose runs docker-compose (or `docker compose`, $NIXBUS_COMPOSE) on the
// top-level docker-compose.yml, with the NATS secrets in secrets, and
// returns its output.
func compose(ctx context.Context, secrets string, args ...string) (string, error) {
	argv := strings.Fields(os.Getenv("NIXBUS_COMPOSE"))
	if len(argv) == 0 {
		argv = []string{"docker-compose"}
	}
	argv = append(argv, append([]string{"-p", project, "-f", "../docker-compose.yml"}, args...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// Compose resolves relative paths from the project directory: absolute.
	flakes, err := filepath.Abs("../examples")
	if err != nil {
		return "", err
	}
	cmd.Env = append(os.Environ(), "NIXBUS_SUBSTITUTERS=", "NIXBUS_FLAKES="+flakes, "NIXBUS_SECRETS="+secrets)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out.String())
	}
	return out.String(), nil
}

// until calls f until it returns nil, or fails the test with f's last
// error once the deadline passes.
func until(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-tick.C:
		}
	}
}

// nixbus runs the nixbus command, as an operator on the host would.
func nixbus(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), bin, args...).CombinedOutput()
	require.NoError(t, err, "nixbus %s: %s", strings.Join(args, " "), out)
	return string(out)
}

func TestCompose(t *testing.T) {
	ctx := t.Context()
	bin := filepath.Join(t.TempDir(), "nixbus")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/nixbus").CombinedOutput()
	require.NoError(t, err, string(out))
	// A NATS user per role: the server's auth.conf and each role's seed.
	secrets := t.TempDir()
	nixbus(t, bin, "nats-config", "--dir", secrets)
	compose := func(ctx context.Context, args ...string) (string, error) { return compose(ctx, secrets, args...) }
	// Whatever an earlier, interrupted run left.
	_, _ = compose(ctx, "down", "-v", "--remove-orphans")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			logs, _ := compose(ctx, "logs", "--no-color", "--tail", "60")
			t.Log(logs)
		}
		if out, err := compose(ctx, "down", "-v", "--remove-orphans"); err != nil {
			t.Errorf("tear down: %v\n%s", err, out)
		}
	})
	_, err = compose(ctx, "up", "-d", "--scale", fmt.Sprintf("builder-x86_64-linux=%d", builders))
	require.NoError(t, err)

	// Up: NATS answers, the streams exist, and the HTTP endpoints of the
	// services and of Jaeger serve.
	var nc *nats.Conn
	admin := natsauth.SecretFile(secrets, natsauth.Nkey, bus.RoleAdmin)
	auth, err := nats.NkeyOptionFromSeed(admin)
	require.NoError(t, err)
	until(t, 2*time.Minute, "nats up", func() (err error) {
		nc, err = nats.Connect(natsURL, nats.MaxReconnects(-1), auth)
		return err
	})
	// It refuses anonymous clients.
	_, err = nats.Connect(natsURL, nats.NoReconnect())
	require.ErrorIs(t, err, nats.ErrAuthorization)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	until(t, 2*time.Minute, "streams and the evaluator's consumer", func() error {
		_, err := js.Consumer(ctx, bus.StreamChanges, evaluator.Consumer)
		return err
	})
	for _, url := range []string{
		"http://127.0.0.1:9464/metrics", "http://127.0.0.1:9465/metrics", "http://127.0.0.1:9466/metrics",
		"http://127.0.0.1:9467/metrics", "http://127.0.0.1:9468/metrics", jaegerURL + "/api/services",
	} {
		until(t, 2*time.Minute, url, func() error { return get(ctx, url, nil) })
	}
	until(t, 2*time.Minute, "builders running", func() error {
		out, err := compose(ctx, "ps", "-q", "builder-x86_64-linux")
		if err != nil {
			return err
		}
		if n := len(strings.Fields(out)); n != builders {
			return fmt.Errorf("%d builder containers", n)
		}
		return nil
	})

	// What an operator does to run a flake by hand: trigger it, as admin,
	// naming the checkout where the evaluator sees it.
	triggered := nixbus(t, bin, "trigger", "--nats.url", natsURL, "--nats.nkey-file", admin, "--otel.endpoint", "http://127.0.0.1:4318",
		"--project", "example", "--local-path", "/srv/flakes/flake")
	m := regexp.MustCompile(`\(event ([^)\s]+)\)`).FindStringSubmatch(triggered)
	require.NotNil(t, m, triggered)
	runID := bus.RunID(m[1])
	t.Logf("run %s", runID)

	res := followRun(t, js, runID, 10*time.Minute)
	v := res.verdict
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.EqualValues(t, 8, v.GetJobCount())
	require.EqualValues(t, 5, v.GetSucceededCount())
	require.EqualValues(t, 2, v.GetFailedCount())
	require.EqualValues(t, 1, v.GetSkippedCount())
	var failed []string
	for _, o := range v.GetFailed() {
		failed = append(failed, o.GetAttr())
	}
	require.ElementsMatch(t, []string{"broken", "after-broken", "eval-error"}, failed)

	require.Equal(t, int32(-1), res.review.GetVerified())
	msg := res.review.GetMessage()
	require.True(t, strings.HasPrefix(msg, "The result is: FAILURE\n"), msg)
	require.Contains(t, msg, " - broken: build failed: ")
	require.Regexp(t, `\n - after-broken: dependency broken failed \(see http://127\.0\.0\.1:9464/logs/[^/\s]+/[0-9a-z]{32}-broken\.drv\)\n`, msg)
	require.Contains(t, msg, " - eval-error: evaluation error: ")
	require.Len(t, res.uploads, 5, "every built job's outputs uploaded")
	for _, u := range res.uploads {
		require.True(t, u.GetOk(), u.GetError())
	}

	// The failed build's log, through the link the review gives.
	link := regexp.MustCompile(`http://127\.0\.0\.1:9464/logs/[^)\s]+`).FindString(msg)
	require.NotEmpty(t, link, msg)
	var logText bytes.Buffer
	require.NoError(t, get(ctx, link, &logText))
	require.Contains(t, logText.String(), "this job fails on purpose")

	// Jaeger holds the run's trace: one trace, rooted at the trigger, with
	// a span from every service the run went through.
	want := []string{"nixbus-trigger", "nixbus-evaluator", "nixbus-planner", "nixbus-builder", "nixbus-cache-uploader", "nixbus-reporter"}
	until(t, 2*time.Minute, "the run's trace in Jaeger", func() error { return traceHas(ctx, runID, want) })
}

type run struct {
	verdict *nixbuspb.RunVerdict
	review  *nixbuspb.ReviewPosted
	uploads []*nixbuspb.UploadResult
}

// followRun reads the run's reports until its review is given and the
// outputs of every build it counts as succeeded are uploaded.
func followRun(t *testing.T, js jetstream.JetStream, runID string, d time.Duration) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, bus.StreamReports, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.VerdictSubject(runID), bus.UploadSubject(runID), bus.ReviewSubject(runID)},
	})
	require.NoError(t, err)
	var r run
	for r.verdict == nil || r.review == nil || int64(len(r.uploads)) < r.verdict.GetSucceededCount() {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		require.NoError(t, err, "run %s: verdict %v, review %v, %d uploads", runID, r.verdict != nil, r.review != nil, len(r.uploads))
		switch msg.Subject() {
		case bus.VerdictSubject(runID):
			require.Nil(t, r.verdict, "a second verdict")
			r.verdict = &nixbuspb.RunVerdict{}
			require.NoError(t, bus.Decode(msg.Data(), r.verdict))
		case bus.ReviewSubject(runID):
			require.Nil(t, r.review, "a second review")
			r.review = &nixbuspb.ReviewPosted{}
			require.NoError(t, bus.Decode(msg.Data(), r.review))
		case bus.UploadSubject(runID):
			u := &nixbuspb.UploadResult{}
			require.NoError(t, bus.Decode(msg.Data(), u))
			r.uploads = append(r.uploads, u)
		}
	}
	return r
}

// get fetches url (into w when not nil) and wants a 200.
func get(ctx context.Context, url string, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if w == nil {
		w = io.Discard
	}
	_, err = io.Copy(w, io.LimitReader(resp.Body, 64<<20))
	return err
}

// jaegerTraces is the part of Jaeger's /api/traces answer the test reads.
type jaegerTraces struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			OperationName string `json:"operationName"`
			ProcessID     string `json:"processID"`
			Tags          []struct {
				Key   string `json:"key"`
				Value any    `json:"value"`
			} `json:"tags"`
			References []struct {
				RefType string `json:"refType"`
			} `json:"references"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
	} `json:"data"`
}

// traceHas checks that Jaeger holds one trace of the run (a span tagged
// with its run id) whose spans come from every service in want, and whose
// root is the trigger's "change event".
func traceHas(ctx context.Context, runID string, want []string) error {
	var body bytes.Buffer
	if err := get(ctx, jaegerURL+"/api/traces?service=nixbus-planner&limit=100", &body); err != nil {
		return err
	}
	var tr jaegerTraces
	if err := json.Unmarshal(body.Bytes(), &tr); err != nil {
		return fmt.Errorf("decode traces: %w", err)
	}
	for _, trace := range tr.Data {
		ofRun, root := false, ""
		services := map[string]bool{}
		for _, s := range trace.Spans {
			services[trace.Processes[s.ProcessID].ServiceName] = true
			for _, tag := range s.Tags {
				if tag.Key == string(bus.AttrRun) && tag.Value == runID {
					ofRun = true
				}
			}
			if len(s.References) == 0 {
				root = trace.Processes[s.ProcessID].ServiceName + "/" + s.OperationName
			}
		}
		if !ofRun {
			continue
		}
		var missing []string
		for _, w := range want {
			if !services[w] {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("trace %s of run %s has no spans of %v yet", trace.TraceID, runID, missing)
		}
		if root != "nixbus-trigger/change event" {
			return fmt.Errorf("trace %s of run %s: root %q, want the trigger's change event", trace.TraceID, runID, root)
		}
		return nil
	}
	return fmt.Errorf("no trace of run %s among %d traces of nixbus-planner", runID, len(tr.Data))
}
