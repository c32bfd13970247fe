package reporter

import (
	"errors"
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
				http.Error(w, "no such log", http.StatusNotFound)
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
