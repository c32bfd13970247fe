// Package nixdaemon is a client of Nix's worker protocol: what `nix` speaks
// to nix-daemon, here spoken to `nix-daemon --stdio`. One long-lived
// connection builds one derivation after another without starting a nix
// process per build, which is most of what a trivial build costs (see
// scripts/bench-overhead.sh). It implements the few operations the
// builder needs, for protocol 1.34 (Nix 2.8) and later minor versions.
package nixdaemon

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

const (
	magic1          = 0x6e697863
	magic2          = 0x6478696f
	protocolVersion = 1<<8 | 34

	opAddIndirectRoot       = 12
	opSetOptions            = 19
	opBuildPathsWithResults = 46

	stderrNext          = 0x6f6c6d67
	stderrRead          = 0x64617461
	stderrWrite         = 0x64617416
	stderrLast          = 0x616c7473
	stderrError         = 0x63787470
	stderrStartActivity = 0x53545254
	stderrStopActivity  = 0x53544f50
	stderrResult        = 0x52534c54
)

// ActivityType and ResultType are Nix's (libutil/logging.hh).
type (
	ActivityType uint64
	ResultType   uint64
)

// The activity and result types the builder looks at.
const (
	ActBuild            ActivityType = 105
	ResBuildLogLine     ResultType   = 101
	ResPostBuildLogLine ResultType   = 107
)

// LevelError is Nix's lvlError verbosity; LevelInfo its default.
const (
	LevelError uint64 = 0
	LevelInfo  uint64 = 3
)

// defaultMaxString caps what is kept of one string the daemon sends (a
// log line a build printed, say): the rest is read and dropped.
const defaultMaxString = 1 << 20

// Field is one field of an activity or result: a number or a string.
type Field struct {
	Int   uint64
	Str   string
	IsStr bool
}

// Activity is a started activity.
type Activity struct {
	ID, Level uint64
	Type      ActivityType
	Text      string
	Fields    []Field
	Parent    uint64
}

// Logger receives what the daemon reports while it works.
type Logger interface {
	// Message is a line nix would print on stderr (a warning, an error).
	Message(text string)
	StartActivity(a Activity)
	StopActivity(id uint64)
	Result(id uint64, typ ResultType, fields []Field)
}

// DaemonError is an error the daemon reported for an operation. The
// daemon ends the connection after an error it found in the request
// itself, so a connection is not to be reused after one.
type DaemonError struct {
	Msg    string
	Traces []string
}

func (e *DaemonError) Error() string { return e.Msg }

// BuildStatus is BuildResult::Status.
type BuildStatus uint64

// The statuses of a build.
const (
	Built BuildStatus = iota
	Substituted
	AlreadyValid
	PermanentFailure
	InputRejected
	OutputRejected
	TransientFailure
	CachedFailure
	TimedOut
	MiscFailure
	DependencyFailed
	LogLimitExceeded
	NotDeterministic
	ResolvesToAlreadyValid
	NoSubstituters
)

// Success reports whether the outputs are valid after the build.
func (s BuildStatus) Success() bool {
	return s == Built || s == Substituted || s == AlreadyValid || s == ResolvesToAlreadyValid
}

// BuildResult is one path's result.
type BuildResult struct {
	Path     string
	Status   BuildStatus
	ErrorMsg string
	// Outputs are the built outputs, name -> store path, as far as the
	// daemon reported them.
	Outputs map[string]string
}

// Options are the settings a connection builds with (wopSetOptions).
type Options struct {
	KeepFailed, KeepGoing, TryFallback bool
	Verbosity                          uint64
	MaxBuildJobs                       uint64
	MaxSilentTime                      uint64 // seconds; 0 is no limit
	BuildCores                         uint64
	UseSubstitutes                     bool
	// Overrides are further settings by name (timeout, build-hook, ...).
	Overrides map[string]string
}

// Conn is a connection to a daemon. It is not safe for concurrent use:
// the protocol runs one operation at a time.
type Conn struct {
	r             reader
	w             writer
	daemonVersion uint64
	// NixVersion is the daemon's nix version, when it says.
	NixVersion string
}

// Open greets the daemon at the other end of r and w.
func Open(r io.Reader, w io.Writer) (*Conn, error) {
	c := &Conn{
		r: reader{r: bufio.NewReaderSize(r, 64<<10), maxString: defaultMaxString},
		w: writer{w: bufio.NewWriterSize(w, 16<<10)},
	}
	c.w.u64(magic1)
	if err := c.w.flush(); err != nil {
		return nil, fmt.Errorf("nix daemon handshake: %w", err)
	}
	if m := c.r.u64(); c.r.err == nil && m != magic2 {
		return nil, fmt.Errorf("%w: not a nix daemon (magic %#x)", ErrProtocol, m)
	}
	if c.daemonVersion = c.r.u64(); c.r.err != nil {
		return nil, fmt.Errorf("nix daemon handshake: %w", c.r.err)
	}
	if c.daemonVersion>>8 != protocolVersion>>8 || c.daemonVersion&0xff < protocolVersion&0xff {
		return nil, fmt.Errorf("%w: daemon speaks %d.%d, need 1.%d or later", ErrProtocol, c.daemonVersion>>8, c.daemonVersion&0xff, protocolVersion&0xff)
	}
	c.w.u64(protocolVersion)
	c.w.u64(0)      // obsolete CPU affinity
	c.w.bool(false) // obsolete reserveSpace
	if err := c.w.flush(); err != nil {
		return nil, fmt.Errorf("nix daemon handshake: %w", err)
	}
	// Since 1.33 the daemon says its version.
	c.NixVersion = c.r.str()
	if err := c.work(nil); err != nil {
		return nil, fmt.Errorf("nix daemon handshake: %w", err)
	}
	return c, nil
}

// SetOptions sets the connection's settings.
func (c *Conn) SetOptions(o Options) error {
	w := &c.w
	w.u64(opSetOptions)
	w.bool(o.KeepFailed)
	w.bool(o.KeepGoing)
	w.bool(o.TryFallback)
	w.u64(o.Verbosity)
	w.u64(o.MaxBuildJobs)
	w.u64(o.MaxSilentTime)
	w.u64(1)          // obsolete useBuildHook
	w.u64(LevelError) // verboseBuild: build logs reach the client
	w.u64(0)          // obsolete logType
	w.u64(0)          // obsolete printBuildTrace
	w.u64(o.BuildCores)
	w.bool(o.UseSubstitutes)
	keys := make([]string, 0, len(o.Overrides))
	for k := range o.Overrides {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.u64(uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.str(o.Overrides[k])
	}
	if err := c.work(nil); err != nil {
		return fmt.Errorf("set nix daemon options: %w", err)
	}
	return nil
}

// BuildMode is how to build (Nix's BuildMode).
type BuildMode uint64

// Normal builds what is missing.
const Normal BuildMode = 0

// BuildPathsWithResults builds paths (derived paths: "<drv>!*" for every
// output of a derivation) and returns one result per path. A failed build
// is a result, not an error; log gets what the daemon reports meanwhile.
func (c *Conn) BuildPathsWithResults(paths []string, mode BuildMode, log Logger) ([]BuildResult, error) {
	c.w.u64(opBuildPathsWithResults)
	c.w.strs(paths)
	c.w.u64(uint64(mode))
	if err := c.work(log); err != nil {
		return nil, fmt.Errorf("build %s: %w", strings.Join(paths, " "), err)
	}
	n := c.r.count()
	out := make([]BuildResult, 0, min(n, 16))
	for i := 0; i < n && c.r.err == nil; i++ {
		out = append(out, c.readBuildResult())
	}
	if c.r.err != nil {
		return nil, fmt.Errorf("read build results: %w", c.r.err)
	}
	return out, nil
}

func (c *Conn) readBuildResult() BuildResult {
	res := BuildResult{Path: c.r.str(), Status: BuildStatus(c.r.u64()), ErrorMsg: c.r.str()}
	// timesBuilt, isNonDeterministic, startTime, stopTime
	for range 4 {
		c.r.u64()
	}
	n := c.r.count()
	for i := 0; i < n && c.r.err == nil; i++ {
		id, raw := c.r.str(), c.r.str()
		// id is "<hash>!<output>"; the realisation is JSON with outPath.
		_, name, ok := strings.Cut(id, "!")
		var real struct {
			OutPath string `json:"outPath"`
		}
		if !ok || json.Unmarshal([]byte(raw), &real) != nil || real.OutPath == "" {
			continue
		}
		if res.Outputs == nil {
			res.Outputs = map[string]string{}
		}
		res.Outputs[name] = real.OutPath
	}
	return res
}

// AddIndirectRoot makes the symlink at path (absolute) a GC root: what
// it points to stays alive while it does.
func (c *Conn) AddIndirectRoot(path string) error {
	c.w.u64(opAddIndirectRoot)
	c.w.str(path)
	if err := c.work(nil); err != nil {
		return fmt.Errorf("add gc root %s: %w", path, err)
	}
	if c.r.u64(); c.r.err != nil {
		return fmt.Errorf("add gc root %s: %w", path, c.r.err)
	}
	return nil
}

// work flushes the request and reads the daemon's log messages up to the
// end of the operation's work: nil, a *DaemonError, or a broken stream.
func (c *Conn) work(log Logger) error {
	if err := c.w.flush(); err != nil {
		return err
	}
	for {
		msg := c.r.u64()
		if c.r.err != nil {
			return c.r.err
		}
		switch msg {
		case stderrLast:
			return nil
		case stderrError:
			return c.readError()
		case stderrNext:
			s := c.r.str()
			if log != nil && c.r.err == nil {
				log.Message(strings.TrimRight(s, "\n"))
			}
		case stderrStartActivity:
			a := Activity{ID: c.r.u64(), Level: c.r.u64(), Type: ActivityType(c.r.u64()), Text: c.r.str()}
			a.Fields = c.readFields()
			a.Parent = c.r.u64()
			if log != nil && c.r.err == nil {
				log.StartActivity(a)
			}
		case stderrStopActivity:
			id := c.r.u64()
			if log != nil && c.r.err == nil {
				log.StopActivity(id)
			}
		case stderrResult:
			id, t := c.r.u64(), ResultType(c.r.u64())
			fields := c.readFields()
			if log != nil && c.r.err == nil {
				log.Result(id, t, fields)
			}
		case stderrRead, stderrWrite:
			// Only operations that stream data use these; none here does.
			return fmt.Errorf("%w: unexpected data request %#x", ErrProtocol, msg)
		default:
			return fmt.Errorf("%w: unknown message %#x", ErrProtocol, msg)
		}
	}
}

func (c *Conn) readFields() []Field {
	n := c.r.count()
	fields := make([]Field, 0, min(n, 16))
	for i := 0; i < n && c.r.err == nil; i++ {
		switch t := c.r.u64(); {
		case c.r.err != nil:
		case t == 0:
			fields = append(fields, Field{Int: c.r.u64()})
		case t == 1:
			fields = append(fields, Field{Str: c.r.str(), IsStr: true})
		default:
			c.r.fail(fmt.Errorf("%w: field type %d", ErrProtocol, t))
		}
	}
	return fields
}

// readError reads a serialised Error (protocol >= 1.26): a *DaemonError,
// or the stream's error.
func (c *Conn) readError() error {
	if typ := c.r.str(); c.r.err == nil && typ != "Error" {
		c.r.fail(fmt.Errorf("%w: error of type %q", ErrProtocol, typ))
	}
	c.r.u64() // level
	c.r.str() // name, no longer used
	e := &DaemonError{Msg: c.r.str()}
	if pos := c.r.u64(); pos != 0 {
		c.r.fail(fmt.Errorf("%w: error with a position", ErrProtocol))
	}
	n := c.r.count()
	for i := 0; i < n && c.r.err == nil; i++ {
		if pos := c.r.u64(); pos != 0 {
			c.r.fail(fmt.Errorf("%w: trace with a position", ErrProtocol))
		}
		if t := c.r.str(); c.r.err == nil {
			e.Traces = append(e.Traces, t)
		}
	}
	if c.r.err != nil {
		return c.r.err
	}
	return e
}

// IsDaemonError reports whether err is one the daemon reported rather
// than a broken connection.
func IsDaemonError(err error) bool {
	var d *DaemonError
	return errors.As(err, &d)
}
