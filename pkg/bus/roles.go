package bus

import (
	"slices"
	"strings"
)

// Roles: one NATS user per service, with exactly the subjects that service
// uses (see RolePermissions), and an admin for operators' commands.
// A role's name is its service's name.
const (
	RoleGerritIngest  = "gerrit-ingest"
	RoleEvaluator     = "evaluator"
	RolePlanner       = "planner"
	RoleBuilder       = "builder"
	RoleCacheUploader = "cache-uploader"
	RoleReporter      = "reporter"
	RoleWeb           = "web"
	// RoleAdmin may do anything: `nixbus streams`, `nixbus run`, `nixbus
	// trigger`, all services in one process, the nats CLI.
	RoleAdmin = "admin"
)

// Roles lists every role, services in start order, then admin.
func Roles() []string {
	return []string{RoleGerritIngest, RoleEvaluator, RolePlanner, RoleBuilder, RoleCacheUploader, RoleReporter, RoleWeb, RoleAdmin}
}

// InboxPrefix is where a role's request replies and pull deliveries
// arrive (nats.CustomInboxPrefix): each role may only listen on its own,
// so one service cannot read the replies another gets.
func InboxPrefix(role string) string { return "_INBOX." + Token(role) }

// Permissions are the subjects a role may publish to and subscribe to, as
// a NATS server's permissions { publish { allow } subscribe { allow } }.
type Permissions struct {
	Publish   []string
	Subscribe []string
}

// RolePermissions returns what role may do on the bus, built from this
// file's and subjects.go's names: a new subject a service publishes or
// consumes is one line in the role's case below. The second result is
// false for an unknown role.
//
// Every role may look at and create (never update or delete) the streams
// and buckets nixbus uses, since any service may come up first (see
// EnsureStreams); it may create consumers on, and read, the streams it
// consumes; and it acks only its own durable consumers' messages.
func RolePermissions(role string) (Permissions, bool) {
	p := &perms{}
	if role == RoleAdmin {
		return Permissions{Publish: []string{">"}, Subscribe: []string{">"}}, true
	}
	p.sub(InboxPrefix(role) + ".>")
	// Account limits, which creating a bucket checks.
	p.pub("$JS.API.INFO")
	for _, s := range allStreams() {
		p.pub(jsAPI("STREAM.INFO", s), jsAPI("STREAM.CREATE", s))
	}
	switch role {
	case RoleGerritIngest:
		p.publishes(ChangeAll)
	case RoleEvaluator:
		p.consumes(StreamChanges, ConsumerEvaluator)
		p.reads(StreamRuns)
		p.publishes(RunSubject("*", RunStartedKind), RunSubject("*", RunJobKind), RunSubject("*", RunGraphKind), RunSubject("*", RunEvalKind))
	case RolePlanner:
		p.follows(StreamRuns)
		p.reads(StreamRuns) // the checkpoint's message, for its time
		// Verdicts: a run with one is finished (replays skip it, a
		// restarted job's run already has its vote).
		p.reads(StreamReports)
		p.listens(BuilderAll)
		p.kv(PlannerBucket, true)
		p.publishes(BuildAll, OutcomeAll, VerdictAll, RunCancels)
		p.listens(BuilderAll) // builders' heartbeats
		// Its metrics: the builds each system's builders have yet to take.
		p.inspects(StreamBuilds)
		p.reads(StreamBuilds)
	case RoleBuilder:
		// One durable per system (ConsumerBuilder); the stream holds
		// nothing but build requests.
		p.consumes(StreamBuilds, "*")
		p.reads(StreamRuns)
		p.listens(RunCancels)
		p.objects(LogBucket, true)
		p.publishes(RunResults, LogAll, BuilderAll)
	case RoleCacheUploader:
		// One durable per set of builders (CacheUploaderConsumer): its
		// name is not known here, so any durable on the runs stream.
		p.consumes(StreamRuns, "*")
		p.reads(StreamRuns)
		p.publishes(UploadAll)
	case RoleReporter:
		p.consumes(StreamReports, ConsumerReporter)
		p.consumes(StreamRuns, ConsumerReporterStarted)
		// A review waits for its run's outcomes and uploads.
		p.follows(StreamReports)
		p.kv(VotesBucket, true)
		p.objects(LogBucket, false)
		// A log link of a build still running answers with its live log.
		p.reads(StreamLogs)
		p.follows(StreamLogs)
		p.publishes(ReviewAll)
	case RoleWeb:
		// Pages follow runs, reports and live logs, and show stored logs.
		p.follows(StreamRuns)
		p.follows(StreamReports)
		p.follows(StreamLogs)
		p.reads(StreamLogs)
		p.objects(LogBucket, false)
		// An admin's actions: cancel a run, run a change again, restart a job.
		p.publishes(RunCancels, ChangeAll, RunSubject("*", RunRestartKind))
	default:
		return Permissions{}, false
	}
	return Permissions{Publish: p.p, Subscribe: p.s}, true
}

// kvStream and objStream are the streams behind a KV and an object bucket.
func kvStream(bucket string) string  { return "KV_" + bucket }
func objStream(bucket string) string { return "OBJ_" + bucket }

// allStreams are the names of the streams EnsureStreams creates.
func allStreams() []string {
	var names []string
	for _, it := range streamItems(StreamOptions{}) {
		names = append(names, it.name)
	}
	return names
}

func jsAPI(op string, tokens ...string) string {
	return "$JS.API." + op + "." + strings.Join(tokens, ".")
}

type perms struct{ p, s []string }

func (p *perms) pub(subjects ...string) {
	for _, s := range subjects {
		if !slices.Contains(p.p, s) {
			p.p = append(p.p, s)
		}
	}
}

func (p *perms) sub(subjects ...string) {
	for _, s := range subjects {
		if !slices.Contains(p.s, s) {
			p.s = append(p.s, s)
		}
	}
}

// publishes: JetStream publishes to subjects (the acks come to the inbox).
func (p *perms) publishes(subjects ...string) { p.pub(subjects...) }

// listens: core NATS subscriptions.
func (p *perms) listens(subjects ...string) { p.sub(subjects...) }

// consumes: a durable pull consumer on stream (Work): create it, look at
// it, pull from it and ack, nak, term or heartbeat its messages.
func (p *perms) consumes(stream, durable string) {
	p.pub(jsAPI("CONSUMER.CREATE", stream, durable), jsAPI("CONSUMER.CREATE", stream, durable, ">"),
		jsAPI("CONSUMER.INFO", stream, durable), jsAPI("CONSUMER.MSG.NEXT", stream, durable),
		"$JS.ACK."+stream+"."+durable+".>")
}

// inspects: the state of any durable consumer of stream (metrics).
func (p *perms) inspects(stream string) {
	p.pub(jsAPI("CONSUMER.INFO", stream, "*"))
}

// reads: single messages of stream by subject (LastRunMessage).
func (p *perms) reads(stream string) {
	p.pub(jsAPI("STREAM.MSG.GET", stream), jsAPI("DIRECT.GET", stream), jsAPI("DIRECT.GET", stream, ">"))
}

// follows: an ordered consumer over stream (ephemeral, no acks).
func (p *perms) follows(stream string) {
	p.pub(jsAPI("CONSUMER.CREATE", stream, "*"), jsAPI("CONSUMER.CREATE", stream, "*", ">"),
		jsAPI("CONSUMER.INFO", stream, "*"), jsAPI("CONSUMER.MSG.NEXT", stream, "*"),
		jsAPI("CONSUMER.DELETE", stream, "*"))
}

// kv: read (and with write, put) keys of a KV bucket.
func (p *perms) kv(bucket string, write bool) {
	p.reads(kvStream(bucket))
	if write {
		p.pub("$KV." + bucket + ".>")
	}
}

// objects: get (and with write, put) objects of an object store bucket.
func (p *perms) objects(bucket string, write bool) {
	s := objStream(bucket)
	p.reads(s)
	// Get streams an object's chunks through an ordered push consumer with
	// flow control.
	p.follows(s)
	p.pub(jsAPI("CONSUMER.CREATE", s), "$JS.FC."+s+".>")
	if write {
		// Put replaces an object's chunks: it purges the old ones.
		p.pub("$O."+bucket+".>", jsAPI("STREAM.PURGE", s))
	}
}
