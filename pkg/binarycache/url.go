// Package binarycache reads and writes Nix binary caches that nixbus
// handles itself rather than through `nix copy`: an S3-compatible bucket
// (Debian's Nix 2.8 is built without S3 support), and, for reading, any
// cache served over HTTP(S) or kept in a local directory.
//
// A cache is named by the URL Nix would take: s3://<bucket>?region=…
// &endpoint=…&scheme=…, https://…, file:///…. Credentials never go in the
// URL: they come from files (see S3Config).
package binarycache

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
)

// Kind is how nixbus reaches a cache.
type Kind int

const (
	// KindNix is a store only nix itself opens (the local store, ssh://,
	// daemon, …).
	KindNix Kind = iota
	// KindFile is a binary cache in a local directory (file://).
	KindFile
	// KindHTTP is a binary cache read over HTTP(S); nixbus never writes it.
	KindHTTP
	// KindS3 is a bucket of an S3-compatible service.
	KindS3
)

// Location is a parsed cache URL.
type Location struct {
	Kind Kind
	// URL is the URL as given.
	URL string
	// Dir is a file:// cache's directory.
	Dir string
	// Base is an http(s) cache's URL without a trailing slash.
	Base string

	// S3 fields, from s3://<bucket>?…
	Bucket string
	// Endpoint is host[:port] of the S3 service (default: AWS's).
	Endpoint string
	Region   string
	// Secure is HTTPS to the S3 service (scheme=http turns it off).
	Secure bool
	// Compression is the NAR compression Nix uses when staging uploads
	// (Nix's compression= parameter; default xz).
	Compression string
	// ParallelCompression is Nix's parallel-compression= parameter.
	ParallelCompression bool
}

// Nix's own parameters of s3:// URLs that nixbus understands; profile is
// accepted and ignored (credentials come from files).
var s3Params = map[string]bool{
	"region": true, "endpoint": true, "scheme": true, "profile": true, "compression": true, "parallel-compression": true,
}

// compressions Nix 2.8 writes and reads.
var compressions = map[string]bool{"xz": true, "bzip2": true, "gzip": true, "zstd": true, "none": true, "br": true}

// Parse reads a cache URL. Its errors never quote the URL, in case it
// holds a credential after all. Anything that is not file://, http(s):// or
// s3:// is KindNix: nix opens it.
func Parse(raw string) (Location, error) {
	loc := Location{Kind: KindNix, URL: raw}
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return loc, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return loc, errors.New("cache url: not a URL") // url's error would quote it
	}
	if u.User != nil {
		return loc, errors.New("cache url: credentials do not belong in the URL; give them as files")
	}
	switch strings.ToLower(scheme) {
	case "file":
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return loc, errors.New("cache url: want file:///absolute/path")
		}
		loc.Kind, loc.Dir = KindFile, path.Clean(u.Path)
	case "http", "https":
		if u.Host == "" {
			return loc, errors.New("cache url: no host")
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return loc, errors.New("cache url: no query or fragment expected in an http(s) cache url")
		}
		loc.Kind, loc.Base = KindHTTP, strings.TrimRight(raw, "/")
	case "s3":
		return parseS3(loc, u)
	}
	return loc, nil
}

func parseS3(loc Location, u *url.URL) (Location, error) {
	loc.Kind, loc.Bucket, loc.Secure, loc.Compression = KindS3, u.Host, true, "xz"
	if loc.Bucket == "" || (u.Path != "" && u.Path != "/") {
		return loc, errors.New("cache url: want s3://<bucket>?region=…&endpoint=…")
	}
	q := u.Query()
	for k := range q {
		if !s3Params[k] {
			return loc, fmt.Errorf("cache url: unknown parameter %q", k)
		}
	}
	loc.Region = q.Get("region")
	switch s := q.Get("scheme"); s {
	case "", "https":
	case "http":
		loc.Secure = false
	default:
		return loc, errors.New("cache url: scheme must be http or https")
	}
	loc.Endpoint = q.Get("endpoint")
	if e, ok := strings.CutPrefix(loc.Endpoint, "http://"); ok {
		loc.Endpoint, loc.Secure = e, false
	} else if e, ok := strings.CutPrefix(loc.Endpoint, "https://"); ok {
		loc.Endpoint, loc.Secure = e, true
	}
	loc.Endpoint = strings.TrimRight(loc.Endpoint, "/")
	if strings.ContainsAny(loc.Endpoint, "/?#@ ") {
		return loc, errors.New("cache url: endpoint must be host[:port]")
	}
	if loc.Endpoint == "" {
		loc.Endpoint = "s3.amazonaws.com"
		if loc.Region != "" {
			loc.Endpoint = "s3." + loc.Region + ".amazonaws.com"
		}
	}
	if c := q.Get("compression"); c != "" {
		if !compressions[c] {
			return loc, fmt.Errorf("cache url: unknown compression %q", c)
		}
		loc.Compression = c
	}
	switch q.Get("parallel-compression") {
	case "", "false", "0":
	case "true", "1":
		loc.ParallelCompression = true
	default:
		return loc, errors.New("cache url: parallel-compression must be true or false")
	}
	return loc, nil
}
