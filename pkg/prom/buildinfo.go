package prom

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// BuildInfo is nixbus_build_info{version,goversion,revision}, always 1:
// which build runs where (the module version, the Go toolchain, the VCS
// revision when the binary was built from a checkout with it recorded).
func BuildInfo() prometheus.Collector {
	version, revision := "(devel)", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nixbus_build_info", Help: "1, labelled with the nixbus version, the Go version and the VCS revision it was built from.",
	}, []string{"version", "goversion", "revision"})
	g.WithLabelValues(version, runtime.Version(), revision).Set(1)
	return g
}
