package binarycache

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"nixbus.dev/nixbus/pkg/secret"
)

// DefaultS3Timeout bounds one request to an S3 service by default.
const DefaultS3Timeout = 10 * time.Minute

// S3Config is how to reach an S3-compatible service beyond what the
// cache URL says: credentials and TLS trust, from files.
type S3Config struct {
	// AccessKeyFile and SecretKeyFile hold the access key id and the secret
	// access key. Both empty: anonymous requests (a public bucket).
	AccessKeyFile string
	SecretKeyFile string
	// CAFile holds PEM certificates trusted for the service's TLS on top
	// of the system's (a private MinIO's CA); it applies to an https://
	// cache too.
	CAFile string
	// Timeout bounds one request (an object's upload included).
	Timeout time.Duration
}

// RegisterFlags registers the S3 flags under prefix (e.g. "cache-uploader.").
func (c *S3Config) RegisterFlags(fs *flag.FlagSet, prefix string) {
	secret.FlagVar(fs, &c.AccessKeyFile, prefix+"s3-access-key-file", "s3-access-key",
		"file holding the S3 access key id of an s3:// cache")
	secret.FlagVar(fs, &c.SecretKeyFile, prefix+"s3-secret-key-file", "s3-secret-key",
		"file holding the S3 secret access key of an s3:// cache")
	fs.StringVar(&c.CAFile, prefix+"s3-ca-file", "", "PEM file of CA certificates trusted for the TLS of an s3:// or https:// cache, besides the system's")
	fs.DurationVar(&c.Timeout, prefix+"s3-timeout", DefaultS3Timeout, "longest one request to the S3 endpoint may take (an upload included)")
}

// Validate checks the configuration for a cache at loc.
func (c *S3Config) Validate(loc Location) error {
	if loc.Kind != KindS3 {
		return nil
	}
	if (c.AccessKeyFile == "") != (c.SecretKeyFile == "") {
		return errors.New("s3-access-key-file and s3-secret-key-file go together")
	}
	if c.Timeout <= 0 {
		return errors.New("s3-timeout must be positive")
	}
	return nil
}

// Bucket is one bucket of an S3-compatible service.
type Bucket struct {
	client  *minio.Client
	name    string
	tr      *http.Transport
	timeout time.Duration
}

// OpenS3 returns the bucket loc names. It reads the credential files now,
// and talks to the service only when asked to.
func OpenS3(loc Location, c S3Config) (*Bucket, error) {
	if loc.Kind != KindS3 {
		return nil, fmt.Errorf("%s is not an s3:// cache", loc.URL)
	}
	if err := c.Validate(loc); err != nil {
		return nil, err
	}
	creds := credentials.NewStatic("", "", "", credentials.SignatureAnonymous)
	if c.AccessKeyFile != "" {
		id, err := readSecret(c.AccessKeyFile)
		if err != nil {
			return nil, fmt.Errorf("s3 access key: %w", err)
		}
		key, err := readSecret(c.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("s3 secret key: %w", err)
		}
		creds = credentials.NewStaticV4(id, key, "")
	}
	tr, err := c.transport()
	if err != nil {
		return nil, err
	}
	tr.ResponseHeaderTimeout = c.Timeout
	client, err := minio.New(loc.Endpoint, &minio.Options{
		Creds: creds, Secure: loc.Secure, Region: loc.Region, Transport: tr, MaxRetries: 5,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", loc.Endpoint, err)
	}
	return &Bucket{client: client, name: loc.Bucket, tr: tr, timeout: c.Timeout}, nil
}

// transport is an HTTP transport trusting the system's CAs and CAFile's.
func (c *S3Config) transport() (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 64
	if c.CAFile == "" {
		return tr, nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("ca file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca file %s: no PEM certificate in it", c.CAFile)
	}
	tr.TLSClientConfig.RootCAs = pool
	return tr, nil
}

// readSecret is a credential file's content, one line; errors never
// quote it.
func readSecret(path string) (string, error) {
	v, err := secret.ReadString(path)
	if err != nil {
		return "", err
	}
	if v = strings.TrimSpace(v); v == "" || strings.ContainsAny(v, "\r\n") {
		return "", fmt.Errorf("%s: want one non-empty line", path)
	}
	return v, nil
}

// Name is the bucket's name.
func (b *Bucket) Name() string { return b.name }

// Client is the underlying client, for tests and set-up tools.
func (b *Bucket) Client() *minio.Client { return b.client }

// Close lets the bucket's idle connections go.
func (b *Bucket) Close() { b.tr.CloseIdleConnections() }

// Has reports whether key exists. A missing key is not an error.
func (b *Bucket) Has(ctx context.Context, key string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	_, err := b.client.StatObject(ctx, b.name, key, minio.StatObjectOptions{})
	if err == nil {
		return true, nil
	}
	if code := minio.ToErrorResponse(err).Code; code == minio.NoSuchKey || code == "NotFound" {
		return false, nil
	}
	return false, fmt.Errorf("stat s3://%s/%s: %w", b.name, key, err)
}

// PutFile uploads the file at path as key.
func (b *Bucket) PutFile(ctx context.Context, key, path, contentType string) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	if _, err := b.client.FPutObject(ctx, b.name, key, path, minio.PutObjectOptions{ContentType: contentType}); err != nil {
		return fmt.Errorf("upload s3://%s/%s: %w", b.name, key, err)
	}
	return nil
}

// Put uploads data as key.
func (b *Bucket) Put(ctx context.Context, key string, data io.Reader, size int64, contentType string) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	if _, err := b.client.PutObject(ctx, b.name, key, data, size, minio.PutObjectOptions{ContentType: contentType}); err != nil {
		return fmt.Errorf("upload s3://%s/%s: %w", b.name, key, err)
	}
	return nil
}
