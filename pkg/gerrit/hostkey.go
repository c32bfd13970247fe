package gerrit

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"nixbus.dev/nixbus/pkg/secret"
)

// HostKeyCallback verifies host keys against knownHostsFile, with errors
// that name the host and the file. It also returns the host key algorithms
// to offer for addr: those of the keys the file pins for it, so a server
// with several host keys presents one the file knows.
func HostKeyCallback(knownHostsFile, addr string) (ssh.HostKeyCallback, []string, error) {
	if err := secret.CheckTrusted(knownHostsFile); err != nil {
		return nil, nil, fmt.Errorf("read gerrit known_hosts: %w", err)
	}
	check, err := knownhosts.New(knownHostsFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read gerrit known_hosts: %w", err)
	}
	verify := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := check(hostname, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return fmt.Errorf("gerrit host %s is not in known_hosts file %s (it offered %s key %s); refusing to connect",
				knownhosts.Normalize(hostname), knownHostsFile, key.Type(), ssh.FingerprintSHA256(key))
		case errors.As(err, &ke):
			return fmt.Errorf("gerrit host key mismatch for %s: it offered %s key %s, known_hosts file %s pins %s; refusing to connect",
				knownhosts.Normalize(hostname), key.Type(), ssh.FingerprintSHA256(key), knownHostsFile, describeKnown(ke.Want))
		default:
			return fmt.Errorf("verify gerrit host key of %s against %s: %w", knownhosts.Normalize(hostname), knownHostsFile, err)
		}
	}
	return verify, knownAlgorithms(check, addr), nil
}

func describeKnown(keys []knownhosts.KnownKey) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s key %s (%s:%d)", k.Key.Type(), ssh.FingerprintSHA256(k.Key), k.Filename, k.Line)
	}
	return strings.Join(parts, ", ")
}

// knownAlgorithms asks the known_hosts checker which keys it holds for addr
// by showing it a throwaway key: the mismatch error lists them.
func knownAlgorithms(check ssh.HostKeyCallback, addr string) []string {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil
	}
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		tcp = &net.TCPAddr{}
	}
	var ke *knownhosts.KeyError
	if err := check(addr, tcp, probe.PublicKey()); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a ...string) {
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				algos = append(algos, x)
			}
		}
	}
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return algos
}

// keepalive probes the server; an unanswered probe closes the connection,
