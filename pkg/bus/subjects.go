// Package bus holds what every nixbus service needs to meet the others on
// NATS JetStream: the wire contract (the names of streams and subjects,
// message ids, and the log store, all of them in this one file), stream
// set-up, and publish/consume helpers that give at-least-once delivery with
// idempotent effects. What one service keeps for itself (its durable
// consumers, its KV buckets) it names and creates itself, declaring it in
// its Access (roles.go).
//
// Subjects:
//
//	nixbus.change.<project-token>        ChangeEvent      stream NIXBUS_CHANGES (work queue)
//	nixbus.run.<run>.started             RunStarted       stream NIXBUS_RUNS
//	nixbus.run.<run>.job                 Job              stream NIXBUS_RUNS
//	nixbus.run.<run>.graph               GraphChunk       stream NIXBUS_RUNS
//	nixbus.run.<run>.evaluated           EvalDone         stream NIXBUS_RUNS
//	nixbus.run.<run>.result              BuildResult      stream NIXBUS_RUNS
//	nixbus.run.<run>.cancel              Cancel           stream NIXBUS_RUNS
//	nixbus.run.<run>.restart             RestartJob       stream NIXBUS_RUNS
//	nix.build.<system>                   BuildRequest     stream NIXBUS_BUILDS (work queue)
//	nixbus.outcome.<run>                 JobOutcome       stream NIXBUS_REPORTS
//	nixbus.verdict.<run>                 RunVerdict       stream NIXBUS_REPORTS
//	nixbus.upload.<run>                  UploadResult     stream NIXBUS_REPORTS
//	nixbus.review.<run>                  ReviewPosted     stream NIXBUS_REPORTS
//	nixbus.log.<run>.<drv-token>         LogChunk         stream NIXBUS_LOGS
//	nixbus.builder.<system>              BuilderAlive     core NATS, no stream
//
// NIXBUS_LOGS holds the live logs of builds as they run, in chunks of at
// most MaxLogChunk bytes and at most --builder.live-log-bytes per build,
// one message id per chunk (LiveLogMsgID): a build's stored log (the
// object store, LogBucket) replaces them once it ends. It keeps chunks
// for a day at most: no build runs longer than that.
//
// Everything the planner needs to rebuild a run is in NIXBUS_RUNS, in order.
// BuilderAlive is a heartbeat each builder sends every
// --builder.heartbeat-interval: it needs no history (a planner that starts
// gives every system one --planner.no-builder-timeout to be heard from).
package bus

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Stream names.
const (
	StreamChanges = "NIXBUS_CHANGES"
	StreamRuns    = "NIXBUS_RUNS"
	StreamBuilds  = "NIXBUS_BUILDS"
	StreamReports = "NIXBUS_REPORTS"
	StreamLogs    = "NIXBUS_LOGS"
)

// ConsumerBuilder names the durable consumer shared by all builders of a
// system. It is the one durable two services know: the planner reads its
// state for the builds each system has yet to take.
func ConsumerBuilder(system string) string { return "builder-" + Token(system) }

// LogBucket is the object store holding build logs, keyed by LogKey:
// builders write them, the reporter, the status pages and `nixbus logs`
// read them. (Other durable consumers and KV buckets are a service's own:
// it names them in its Access.)
const LogBucket = "nixbus-logs"

// Subject roots.
const (
	changePrefix  = "nixbus.change."
	runPrefix     = "nixbus.run."
	buildPrefix   = "nix.build."
	outcomePrefix = "nixbus.outcome."
	verdictPrefix = "nixbus.verdict."
	uploadPrefix  = "nixbus.upload."
	reviewPrefix  = "nixbus.review."
	logPrefix     = "nixbus.log."
	builderPrefix = "nixbus.builder."
)

// Kinds of message on a run's subject, the last token of nixbus.run.<run>.<kind>.
const (
	RunStartedKind = "started"
	RunJobKind     = "job"
	RunGraphKind   = "graph"
	RunEvalKind    = "evaluated"
	RunResultKind  = "result"
	RunCancelKind  = "cancel"
	// RunRestartKind asks for a failed job of a finished run to be built again.
	RunRestartKind = "restart"
)

// Filters for consumers.
const (
	ChangeAll  = changePrefix + ">"
	RunAll     = runPrefix + ">"
	RunResults = runPrefix + "*." + RunResultKind
	RunStarts  = runPrefix + "*." + RunStartedKind
	RunCancels = runPrefix + "*." + RunCancelKind
	BuildAll   = buildPrefix + ">"
	OutcomeAll = outcomePrefix + ">"
	VerdictAll = verdictPrefix + ">"
	UploadAll  = uploadPrefix + ">"
	ReviewAll  = reviewPrefix + ">"
	LogAll     = logPrefix + ">"
	BuilderAll = builderPrefix + "*"
)

// ChangeSubject is where change events for a project go.
func ChangeSubject(project string) string { return changePrefix + Token(project) }

// RunSubject is nixbus.run.<run>.<kind>.
func RunSubject(runID, kind string) string { return runPrefix + runID + "." + kind }

// BuildSubject is the design's fixed nix.build.<system>.
func BuildSubject(system string) string { return buildPrefix + Token(system) }

// BuilderSubject carries the heartbeats of a system's builders.
func BuilderSubject(system string) string { return builderPrefix + Token(system) }

// OutcomeSubject carries a run's job outcomes.
func OutcomeSubject(runID string) string { return outcomePrefix + runID }

// VerdictSubject carries a run's verdict.
func VerdictSubject(runID string) string { return verdictPrefix + runID }

// UploadSubject carries a run's upload results.
func UploadSubject(runID string) string { return uploadPrefix + runID }

// ReviewSubject carries the review a run got.
func ReviewSubject(runID string) string { return reviewPrefix + runID }

// LogSubject carries the live log chunks of one build of a run. drv is a
// derivation path or its base name.
func LogSubject(runID, drv string) string { return logPrefix + runID + "." + Token(DrvBase(drv)) }

// LogRunSubjects matches the live logs of every build of a run.
func LogRunSubjects(runID string) string { return logPrefix + runID + ".*" }

// MaxLogChunk bounds the data of one LogChunk.
const MaxLogChunk = 64 << 10

// ParseRunSubject splits nixbus.run.<run>.<kind>.
func ParseRunSubject(subject string) (runID, kind string, err error) {
	rest, ok := strings.CutPrefix(subject, runPrefix)
	if !ok {
		return "", "", fmt.Errorf("subject %q is not a run subject", subject)
	}
	runID, kind, ok = strings.Cut(rest, ".")
	if !ok || runID == "" || kind == "" || strings.Contains(kind, ".") {
		return "", "", fmt.Errorf("subject %q is not nixbus.run.<run>.<kind>", subject)
	}
	return runID, kind, nil
}

// Token makes s safe as one subject token: NATS tokens may not hold '.',
// '*', '>' or white space. Anything else passes through unchanged so that
// common names (x86_64-linux, my-project) stay readable.
func Token(s string) string {
	if s == "" {
		return "_"
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f:
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// RunID derives a run's id from the event that started it, so that a
// redelivered event produces the same run and JetStream drops the repeats.
func RunID(eventID string) string {
	sum := sha256.Sum256([]byte(eventID))
	return "r" + hex.EncodeToString(sum[:10])
}

// ValidRunID reports whether s can be a run id on the bus: a subject token
// of letters, digits, '-' and '_' (RunID's ids, and the ones tests and
// manual runs name). Every service checks ids it did not make with it
// before putting them in a subject, a key or a path.
func ValidRunID(s string) bool { return runIDRe.MatchString(s) }

var runIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// Message ids for JetStream de-duplication, one function per kind so every
// publisher of a kind agrees on it.
func MsgIDStarted(runID string) string       { return "started:" + runID }
func MsgIDJob(runID, attr string) string     { return "job:" + runID + ":" + hashed(attr) }
func MsgIDEvalDone(runID string) string      { return "evaluated:" + runID }
func MsgIDBuild(runID, drv string) string    { return "build:" + runID + ":" + drv }
func MsgIDResult(runID, drv string) string   { return "result:" + runID + ":" + drv }
func MsgIDCancel(runID string) string        { return "cancel:" + runID }
func MsgIDOutcome(runID, attr string) string { return "outcome:" + runID + ":" + hashed(attr) }
func MsgIDVerdict(runID string) string       { return "verdict:" + runID }
func MsgIDUpload(runID, drv string) string   { return "upload:" + runID + ":" + drv }
func MsgIDReview(runID string) string        { return "review:" + runID }
func MsgIDChange(eventID string) string      { return "change:" + eventID }
func MsgIDRestart(runID, drv string, unixMs int64) string {
	return fmt.Sprintf("restart:%s:%s:%d", runID, DrvBase(drv), unixMs)
}
func LogKey(runID, drvPath string) string { return runID + "/" + DrvBase(drvPath) }

// SplitLogKey is LogKey undone: the run and the derivation's base name.
func SplitLogKey(logKey string) (run, drvBase string, ok bool) {
	return strings.Cut(logKey, "/")
}

// LogURL is where the log of logKey is served under base (the reporter's
// --reporter.log-base-url): <base>/<run>/<drv basename>, each escaped.
func LogURL(base, logKey string) string {
	run, drv, _ := SplitLogKey(logKey)
	return strings.TrimRight(base, "/") + "/" + url.PathEscape(run) + "/" + url.PathEscape(drv)
}

// MsgIDRebuild and MsgIDRebuildResult are MsgIDBuild and MsgIDResult of
// a restarted job's build, released by the RestartJob at stream sequence
// restartSeq (0: the run's own build).
func MsgIDRebuild(runID, drv string, restartSeq uint64) string {
	if restartSeq == 0 {
		return MsgIDBuild(runID, drv)
	}
	return fmt.Sprintf("%s:restart:%d", MsgIDBuild(runID, drv), restartSeq)
}

func MsgIDRebuildResult(runID, drv string, restartSeq uint64) string {
	if restartSeq == 0 {
		return MsgIDResult(runID, drv)
	}
	return fmt.Sprintf("%s:restart:%d", MsgIDResult(runID, drv), restartSeq)
}

// MsgIDOutcomeRevision, MsgIDVerdictRevision and MsgIDReviewRevision are
// MsgIDOutcome, MsgIDVerdict and MsgIDReview of a run re-derived after a
// restarted job (revision: RunVerdict.revision, 0 for the run's first).
func MsgIDOutcomeRevision(runID, attr string, revision uint64) string {
	return withRevision(MsgIDOutcome(runID, attr), revision)
}

func MsgIDVerdictRevision(runID string, revision uint64) string {
	return withRevision(MsgIDVerdict(runID), revision)
}

func MsgIDReviewRevision(runID string, revision uint64) string {
	return withRevision(MsgIDReview(runID), revision)
}

func withRevision(id string, revision uint64) string {
	if revision == 0 {
		return id
	}
	return id + ":revision:" + strconv.FormatUint(revision, 10)
}

// MsgIDLogChunk names chunk seq of one attempt of a build's live log.
func MsgIDLogChunk(runID, drv string, restartSeq, delivery uint64, seq int64) string {
	return fmt.Sprintf("log:%s:%s:%d:%d:%d", runID, DrvBase(drv), restartSeq, delivery, seq)
}

// MsgIDGraph is the id of a run's graph chunk number index.
func MsgIDGraph(runID string, index int32) string {
	return "graph:" + runID + ":" + strconv.Itoa(int(index))
}

// hashed keeps ids short and header-safe whatever an attribute name holds.
func hashed(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:12])
}

// DrvBase is a derivation path's base name (<hash>-<name>.drv), the part
// log keys and page URLs use.
func DrvBase(drvPath string) string {
	if i := strings.LastIndexByte(drvPath, '/'); i >= 0 {
		drvPath = drvPath[i+1:]
	}
	return drvPath
}
