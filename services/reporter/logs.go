package reporter

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"nixbus.dev/nixbus/pkg/bus"
)

// LogHandler serves build logs from the object store at
// <prefix>/<run>/<drv basename>, which is what review links point at.
// Mount it with http.StripPrefix.
func (s *Service) LogHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		run, drv, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if !ok || !validToken(run) || !validToken(drv) {
			http.Error(w, "want /<run>/<derivation>", http.StatusBadRequest)
			return
		}
		store, err := s.js.ObjectStore(r.Context(), bus.LogBucket)
		if err != nil {
			http.Error(w, "log store unavailable", http.StatusServiceUnavailable)
			return
		}
		obj, err := store.Get(r.Context(), run+"/"+drv)
		if err != nil {
			if bus.IsNotFound(err) {
				s.serveLiveLog(w, r, run, drv)
				return
			}
			http.Error(w, "log store unavailable", http.StatusServiceUnavailable)
			return
		}
		defer func() {
			if err := obj.Close(); err != nil {
				s.logger.Warn("close log", "err", err)
			}
		}()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if _, err := io.Copy(w, obj); err != nil && !errors.Is(err, r.Context().Err()) {
			s.logger.Warn("serve log", "run", run, "drv", drv, "err", err)
		}
	})
}

// serveLiveLog answers for a log not stored yet with what the build has
// streamed so far (bus.LogSubject): a link to a running build's log works.
func (s *Service) serveLiveLog(w http.ResponseWriter, r *http.Request, run, drv string) {
	live, ok, err := bus.ReadLiveLog(r.Context(), s.js, run, drv, maxLiveLog)
	if err != nil {
		s.logger.Warn("read live log", "run", run, "drv", drv, "err", err)
		http.Error(w, "log store unavailable", http.StatusServiceUnavailable)
		return
	}
	if !ok {
		http.Error(w, "no such log", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	state := "still running; reload for more"
	if live.Final {
		state = "finished; the stored log will replace this"
	}
	_, _ = fmt.Fprintf(w, "[nixbus: this build is %s]\n", state)
	_, _ = w.Write(live.Data)
}

// maxLiveLog bounds a live log served at once (builders stream less).
const maxLiveLog = 64 << 20

// validToken refuses traversal and anything a log key cannot hold.
func validToken(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 255 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._+-=?", r)) {
			return false
		}
	}
	return true
}
