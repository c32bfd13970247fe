package evaluator

import (
	"nixbus.dev/nixbus/pkg/gerrit"
	"nixbus.dev/nixbus/services/evaluator/internal/fetch"
)

// NewGitFetcher returns the Fetcher that checks out Gerrit changes and
// branches with git over SSH (key and known_hosts of ssh) or HTTPS
// (credentials of http). It returns a nil Fetcher, and no error, when
// neither is configured: the evaluator then only runs local checkouts.
func NewGitFetcher(ssh gerrit.SSHConfig, http gerrit.HTTPConfig) (Fetcher, error) {
	if !ssh.Enabled() && !http.Enabled() {
		return nil, nil
	}
	f, err := fetch.New(fetch.Config{SSH: ssh, HTTP: http})
	if err != nil {
		return nil, err
	}
	return f, nil
}
