// Package app wires nixbus's services into one binary: the ordered list of
// services, the shared flags, the embedded NATS server, and the operator
// commands (serve, run, plan, trigger, watch, status, logs). main only calls Main.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const usage = `nixbus: Gerrit-driven CI for Nix flakes.

Usage:
  nixbus serve [flags]              run services (default: all) until interrupted
  nixbus <service> [flags]          run one service (same as serve --service=<service>)
  nixbus run [flags] <flake dir>    evaluate, build, upload and report one local flake, then exit
  nixbus plan --jobs F --derivations F [--fail F] [--systems S,...]
                                    replay the planner on a recorded evaluation
  nixbus trigger --project P (--change N --patchset K | --ref R) [flags]
                                    publish a change event by hand (like a force build) and print
                                    the run id; --watch follows the run (exit codes as watch)
  nixbus watch [flags] <run>        live progress per system until the verdict
                                    (exit 0 success, 1 failed, 2 could not watch)
  nixbus status [flags] [run]       recent runs, or one run's counts and failed jobs
  nixbus logs [flags] <run> <attr> [-f]
                                    a job's build log; -f follows the live log to its end
  nixbus restart [flags] <run> <attr>
                                    build a failed job of an ended run again
  nixbus streams [flags] show|apply  compare the streams' settings with the --nats.* flags, or apply them
  nixbus nats-config --dir D [--auth nkey|password]
                                    write NATS users with least privilege, one per role

Services: %s
Run "nixbus <command> -h" for flags.
`

// Main runs the command in args (without the program name) and returns the
// process exit code.
func Main(ctx context.Context, args []string, stdout, stderr *os.File) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(stderr, usage, strings.Join(Names(), ", "))
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch {
	case cmd == "serve":
		err = serve(ctx, rest, stdout, stderr, nil)
	case known(cmd):
		err = serve(ctx, rest, stdout, stderr, []string{cmd})
	case cmd == "run":
		// 0: the run succeeded; 1: it ran and failed; 2: it could not run.
		ok, err := runCommand(ctx, rest, stdout, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "nixbus run: %v\n", err)
			return 2
		}
		if !ok {
			return 1
		}
		return 0
	case cmd == "plan":
		err = planCommand(ctx, rest, stdout, stderr)
	case cmd == "trigger":
		code, err := triggerCommand(ctx, rest, stdout, stderr)
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		if err != nil {
			fmt.Fprintf(stderr, "nixbus trigger: %v\n", err)
			return max(code, 1)
		}
		return code
	case cmd == "watch":
		return watchCommand(ctx, rest, stdout, stderr)
	case cmd == "status":
		err = statusCommand(ctx, rest, stdout, stderr)
	case cmd == "logs":
		err = logsCommand(ctx, rest, stdout, stderr)
	case cmd == "restart":
		err = restartCommand(ctx, rest, stdout, stderr)
	case cmd == "streams":
		err = streamsCommand(ctx, rest, stdout, stderr)
	case cmd == "nats-config":
		err = natsConfigCommand(ctx, rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "nixbus: unknown command %q\n", cmd)
		fmt.Fprintf(stderr, usage, strings.Join(Names(), ", "))
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "nixbus %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("nixbus "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// serveFlags is serve's flag set: the shared and every service's flags,
// with HTTP on DefaultHTTPAddress.
func serveFlags(stderr io.Writer) (*flag.FlagSet, *Options, *Configs) {
	fs := newFlagSet("serve", stderr)
	var o Options
	var c Configs
	o.RegisterFlags(fs)
	c.RegisterFlags(fs)
	fs.Lookup("http.address").DefValue = DefaultHTTPAddress
	o.HTTPAddress = DefaultHTTPAddress
	return fs, &o, &c
}

func serve(ctx context.Context, args []string, stdout, stderr *os.File, only []string) error {
	fs, o, c := serveFlags(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if only != nil {
		o.Services = only
	}
	logger := o.Logger(stderr)
	inst, err := Start(ctx, *o, c, stdout, logger)
	if err != nil {
		return err
	}
	return inst.Wait()
}
