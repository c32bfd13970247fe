package binarycache

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	tests := []struct {
		url  string
		want Location
		err  string
	}{
		{url: "file:///var/cache/nix/", want: Location{Kind: KindFile, Dir: "/var/cache/nix"}},
		{url: "https://cache.example.org/", want: Location{Kind: KindHTTP, Base: "https://cache.example.org"}},
		{url: "http://127.0.0.1:9000/bucket", want: Location{Kind: KindHTTP, Base: "http://127.0.0.1:9000/bucket"}},
		{url: "ssh://builder", want: Location{Kind: KindNix}},
		{url: "", want: Location{Kind: KindNix}},
		{url: "daemon", want: Location{Kind: KindNix}},
		{
			url:  "s3://ci-cache?region=eu-west-1",
			want: Location{Kind: KindS3, Bucket: "ci-cache", Region: "eu-west-1", Endpoint: "s3.eu-west-1.amazonaws.com", Secure: true, Compression: "xz"},
		},
		{
			url:  "s3://ci-cache?endpoint=minio.example:9000&scheme=http&profile=ci&compression=zstd&parallel-compression=true",
			want: Location{Kind: KindS3, Bucket: "ci-cache", Endpoint: "minio.example:9000", Compression: "zstd", ParallelCompression: true},
		},
		{
			url:  "s3://b?endpoint=https://minio.example/",
			want: Location{Kind: KindS3, Bucket: "b", Endpoint: "minio.example", Secure: true, Compression: "xz"},
		},
		{
			url:  "s3://b?endpoint=http://127.0.0.1:9000",
			want: Location{Kind: KindS3, Bucket: "b", Endpoint: "127.0.0.1:9000", Compression: "xz"},
		},
		{url: "s3://", err: "want s3://<bucket>"},
		{url: "s3://b/prefix", err: "want s3://<bucket>"},
		{url: "s3://b?aws-key=hunter2", err: `unknown parameter "aws-key"`},
		{url: "s3://b?scheme=ftp", err: "scheme must be http or https"},
		{url: "s3://b?endpoint=host/path", err: "endpoint must be host[:port]"},
		{url: "s3://b?compression=lz4", err: `unknown compression "lz4"`},
		{url: "s3://key:hunter2@b", err: "credentials do not belong in the URL"},
		{url: "https://user:hunter2@cache.example.org", err: "credentials do not belong in the URL"},
		{url: "file://host/dir", err: "want file:///absolute/path"},
		{url: "https://cache.example.org/?x=1", err: "no query"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			got, err := Parse(tt.url)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				require.NotContains(t, err.Error(), "hunter2", "a credential in a URL is not repeated")
				return
			}
			require.NoError(t, err)
			tt.want.URL = tt.url
			require.Equal(t, tt.want, got)
		})
	}
}

func TestHashPart(t *testing.T) {
	for p, want := range map[string]string{
		"/nix/store/46miwv0jfchavnhdpyrynppxczkakbmw-top": "46miwv0jfchavnhdpyrynppxczkakbmw",
		"/nix/store/46miwv0jfchavnhdpyrynppxczkakbmw":     "",
		"/nix/store/46miwv0jfchavnhdpyrynppxczkakbme-top": "", // 'e' is not in Nix's base-32
		"/nix/store/../../etc/passwd":                     "",
		"":                                                "",
	} {
		require.Equal(t, want, HashPart(p), p)
	}
}
