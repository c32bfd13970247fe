package app

import (
	"context"
	"flag"
	"path/filepath"
	"runtime"

	"nixbus.dev/nixbus/pkg/bus"

	"nixbus.dev/nixbus/services/builder"
	cacheuploader "nixbus.dev/nixbus/services/cache-uploader"
	"nixbus.dev/nixbus/services/evaluator"
	gerritingest "nixbus.dev/nixbus/services/gerrit-ingest"
	"nixbus.dev/nixbus/services/planner"
	"nixbus.dev/nixbus/services/reporter"
	"nixbus.dev/nixbus/services/web"
)

// Service is what every nixbus service is once constructed.
type Service interface {
	Run(ctx context.Context) error
}

// Configs holds every service's configuration.
type Configs struct {
	GerritIngest  gerritingest.Config
	Evaluator     evaluator.Config
	Planner       planner.Config
	Builder       builder.Config
	CacheUploader cacheuploader.Config
	Reporter      reporter.Config
	Web           web.Config
	Gerrit        GerritConfig
}

// RegisterFlags registers every service's flags.
func (c *Configs) RegisterFlags(fs *flag.FlagSet) {
	c.GerritIngest.RegisterFlags(fs)
	c.Evaluator.RegisterFlags(fs)
	c.Planner.RegisterFlags(fs)
	c.Builder.RegisterFlags(fs)
	c.CacheUploader.RegisterFlags(fs)
	c.Reporter.RegisterFlags(fs)
	c.Web.RegisterFlags(fs)
	c.Gerrit.RegisterFlags(fs)
}

// defaults fills what depends on the state dir and the host.
func (c *Configs) defaults(stateDir string) {
	if c.Evaluator.WorkDir == "" {
		c.Evaluator.WorkDir = filepath.Join(stateDir, "evaluator")
	}
	if c.CacheUploader.CacheURL == "" {
		c.CacheUploader.CacheURL = "file://" + filepath.Join(stateDir, "cache")
	}
	if c.Evaluator.CacheURL == "" {
		c.Evaluator.CacheURL = c.CacheUploader.CacheURL
		if c.Evaluator.S3.AccessKeyFile == "" && c.Evaluator.S3.SecretKeyFile == "" {
			c.Evaluator.S3.AccessKeyFile, c.Evaluator.S3.SecretKeyFile = c.CacheUploader.S3.AccessKeyFile, c.CacheUploader.S3.SecretKeyFile
		}
		if c.Evaluator.S3.CAFile == "" {
			c.Evaluator.S3.CAFile = c.CacheUploader.S3.CAFile
		}
	}
	if c.CacheUploader.SecretKeyFile == "" {
		c.CacheUploader.SecretKeyFile = filepath.Join(stateDir, "keys", "nixbus-cache.sec")
		c.CacheUploader.GenerateKey = true
	}
	// The default branch's post-merge builds get gc roots and an outputs
	// directory, as buildbot-nix gives them.
	if c.CacheUploader.GCRootsDir == "" {
		c.CacheUploader.GCRootsDir = filepath.Join(stateDir, "gcroots")
	}
	if c.CacheUploader.OutputsDir == "" {
		c.CacheUploader.OutputsDir = filepath.Join(stateDir, "outputs")
	}
	if c.Builder.LogBaseURL == "" {
		c.Builder.LogBaseURL = c.Reporter.LogBaseURL
	}
	if c.Builder.WorkDir == "" {
		c.Builder.WorkDir = filepath.Join(stateDir, "builder")
	}
	if len(c.Planner.Systems) == 0 {
		c.Planner.Systems = c.Evaluator.Systems
	}
	if c.Builder.System == "" {
		c.Builder.System = HostSystem()
	}
}

// HostSystem is this machine's Nix system double.
func HostSystem() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return arch + "-" + runtime.GOOS
}

// entry is one service: its name (its bus role's too), what it does on the
// bus, and how to build it. The slice order is start order: upstream
// first; they stop in reverse.
type entry struct {
	name      string
	access    func() bus.Access
	construct func(c *Configs, d deps) (Service, error)
	// durables are the durable consumers the service works through (their
	// names made from its config, or the service says): their state is a
	// metric, their existence readiness.
	durables func(c *Configs, svc Service) []bus.Durable
}

var registry = []entry{
	{"gerrit-ingest", gerritingest.Access, func(c *Configs, d deps) (Service, error) {
		return gerritingest.New(c.GerritIngest, gerritingest.Deps{JS: d.js, Logger: d.logger, Registerer: d.reg, SSH: c.Gerrit.ssh(), TracerProvider: d.tp})
	}, nil},
	{"evaluator", evaluator.Access, func(c *Configs, d deps) (Service, error) {
		f, err := c.Gerrit.fetcher()
		if err != nil {
			return nil, err
		}
		return evaluator.New(c.Evaluator, evaluator.Deps{JS: d.js, Logger: d.logger, Registerer: d.reg, Nix: d.nix, Fetcher: f, TracerProvider: d.tp})
	}, func(*Configs, Service) []bus.Durable {
		return []bus.Durable{{Stream: bus.StreamChanges, Name: evaluator.Consumer}}
	}},
	{"planner", planner.Access, func(c *Configs, d deps) (Service, error) {
		return planner.New(c.Planner, planner.Deps{JS: d.js, Logger: d.logger, Registerer: d.reg, TracerProvider: d.tp})
	}, nil},
	{"builder", builder.Access, func(c *Configs, d deps) (Service, error) {
		return builder.New(c.Builder, builder.Deps{JS: d.js, Logger: d.logger, Registerer: d.reg, Nix: d.nix, TracerProvider: d.tp})
	}, func(c *Configs, _ Service) []bus.Durable {
		return []bus.Durable{{Stream: bus.StreamBuilds, Name: bus.ConsumerBuilder(c.Builder.System)}}
	}},
	{"cache-uploader", cacheuploader.Access, func(c *Configs, d deps) (Service, error) {
		return cacheuploader.New(c.CacheUploader, cacheuploader.Deps{JS: d.js, Logger: d.logger, Registerer: d.reg, Nix: d.nix, TracerProvider: d.tp})
	}, func(c *Configs, _ Service) []bus.Durable {
		return []bus.Durable{{Stream: bus.StreamRuns, Name: cacheuploader.Consumer(c.CacheUploader.Builders)}}
	}},
	{"reporter", reporter.Access, func(c *Configs, d deps) (Service, error) {
		p, err := c.Gerrit.poster()
		if err != nil {
			return nil, err
		}
		s, err := reporter.New(c.Reporter, reporter.Deps{JS: d.js, Logger: d.logger, Registerer: d.reg, Gerrit: p, Out: d.out, TracerProvider: d.tp})
		if err == nil && d.mux != nil {
			d.mux.Handle("/logs/", stripPrefix("/logs", s.LogHandler()))
		}
		return s, err
	}, func(_ *Configs, svc Service) []bus.Durable { return svc.(*reporter.Service).Durables() }},
	// The status pages, at / of --http.address (nothing without one).
	{"web", web.Access, func(c *Configs, d deps) (Service, error) {
		s, err := web.New(c.Web, web.Deps{JS: d.js, Logger: d.logger, Registerer: d.reg, TracerProvider: d.tp})
		if err == nil && d.mux != nil {
			d.mux.Handle("/", s.Handler())
		}
		return s, err
	}, nil},
}

// Names lists the services in start order.
func Names() []string {
	names := make([]string, len(registry))
	for i, e := range registry {
		names[i] = e.name
	}
	return names
}

func known(name string) bool {
	_, ok := Access(name)
	return ok
}

// Access is what the service name does on the bus; false for no service.
func Access(name string) (bus.Access, bool) {
	for _, e := range registry {
		if e.name == name {
			return e.access(), true
		}
	}
	return bus.Access{}, false
}

// Roles lists every role on the bus: the services in start order, then
// the admin.
func Roles() []string { return append(Names(), bus.RoleAdmin) }

// RolePermissions is what role may do on the bus, derived from its
// service's Access; false for an unknown role.
func RolePermissions(role string) (bus.Permissions, bool) {
	if role == bus.RoleAdmin {
		return bus.AdminPermissions(), true
	}
	a, ok := Access(role)
	if !ok {
		return bus.Permissions{}, false
	}
	return a.Permissions(role), true
}

// buckets are the KV buckets the named services own (nil: every service's).
func buckets(names []string) []bus.Bucket {
	var out []bus.Bucket
	for _, e := range registry {
		if names == nil || contains(names, e.name) {
			out = append(out, e.access().Buckets...)
		}
	}
	return out
}
