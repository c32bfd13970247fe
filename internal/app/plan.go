package app

import (
	"context"
	"errors"
	"os"
	"strings"

	"nixbus.dev/nixbus/internal/replay"
)

// planCommand replays the planner on a recorded evaluation: what a change
// would build, and how fast the planner is on it.
func planCommand(ctx context.Context, args []string, stdout, stderr *os.File) error {
	fs := newFlagSet("plan", stderr)
	var o replay.Options
	var systems string
	fs.StringVar(&o.JobsPath, "jobs", "", "nix-eval-jobs JSON lines (one job per line)")
	fs.StringVar(&o.DerivationsPath, "derivations", "", "`nix derivation show --recursive` JSON of the jobs")
	fs.StringVar(&o.FailPath, "fail", "", "file of derivation paths whose builds fail (one per line)")
	fs.StringVar(&systems, "systems", "x86_64-linux,aarch64-linux", "supported systems, comma separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.JobsPath == "" || o.DerivationsPath == "" {
		return errors.New("--jobs and --derivations are required")
	}
	o.Systems = strings.Split(systems, ",")
	return replay.Run(ctx, o, stdout, stderr)
}
