package bus

import (
	"slices"
	"strings"
)

// Roles: one NATS user per service, with exactly the subjects that service
// uses, and an admin for operators' commands. A service's role is named
// after it and its permissions are derived from the Access it declares
// (each service's Access function): what a service owns (its durable
// consumers, its KV buckets) it names itself, and pkg/bus knows none of it.

// RoleAdmin may do anything: `nixbus streams`, `nixbus run`, `nixbus
// trigger`, all services in one process, the nats CLI.
const RoleAdmin = "admin"

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

// AdminPermissions are RoleAdmin's: everything.
func AdminPermissions() Permissions {
	return Permissions{Publish: []string{">"}, Subscribe: []string{">"}}
}

// Access is what one service does on the bus, declared by the service: a
// new subject it publishes or consumes is one entry in its Access.
type Access struct {
	// Publishes are subjects it publishes to JetStream (the acks come to
	// its inbox).
	Publishes []string
	// Listens are core NATS subscriptions.
	Listens []string
	// Consumes are its durable pull consumers: it creates them, looks at
	// them, pulls from them and acks, naks, terms or heartbeats their
	// messages.
	Consumes []Durable
	// Follows are streams it reads with ordered consumers (ephemeral, no
	// acks).
	Follows []string
	// Reads are streams whose single messages it gets by subject
	// (LastRunMessage).
	Reads []string
	// Inspects are streams whose durable consumers' state it looks at
	// (metrics).
	Inspects []string
	// Buckets are the KV buckets it owns: it creates them (EnsureStreams),
	// reads and writes them; no other service does.
	Buckets []Bucket
	// Logs is how it uses the build logs' object store (LogBucket).
	Logs LogUse
}

// Durable is a durable consumer on Stream. Name "*" stands for names the
// service makes at run time (one per system, one per set of builders).
type Durable struct {
	Stream, Name string
}

// LogUse is how a service uses LogBucket.
type LogUse int

// Uses of LogBucket.
const (
	NoLogs LogUse = iota
	ReadsLogs
	WritesLogs
)

// Permissions returns what a's service may do on the bus as role.
//
// Every role may also look at and create (never update or delete) the
// shared streams and its own buckets, since any service may come up first
// (see EnsureStreams).
func (a Access) Permissions(role string) Permissions {
	p := &perms{}
	p.sub(InboxPrefix(role) + ".>")
	// Account limits, which creating a bucket checks.
	p.pub("$JS.API.INFO")
	for _, it := range streamItems(StreamOptions{}, a.Buckets) {
		p.pub(jsAPI("STREAM.INFO", it.name), jsAPI("STREAM.CREATE", it.name))
	}
	for _, d := range a.Consumes {
		p.consumes(d.Stream, d.Name)
	}
	for _, s := range a.Reads {
		p.reads(s)
	}
	for _, s := range a.Follows {
		p.follows(s)
	}
	for _, s := range a.Inspects {
		p.inspects(s)
	}
	p.listens(a.Listens...)
	for _, b := range a.Buckets {
		p.kv(b.Name)
		if b.Watched {
			p.watches(kvStream(b.Name))
		}
	}
	if a.Logs != NoLogs {
		p.objects(LogBucket, a.Logs == WritesLogs)
	}
	p.publishes(a.Publishes...)
	return Permissions{Publish: p.p, Subscribe: p.s}
}

// kvStream and objStream are the streams behind a KV and an object bucket.
func kvStream(bucket string) string  { return "KV_" + bucket }
func objStream(bucket string) string { return "OBJ_" + bucket }

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

// kv: read and put keys of a KV bucket.
func (p *perms) kv(bucket string) {
	p.reads(kvStream(bucket))
	p.pub("$KV." + bucket + ".>")
}

// watches: an ordered push consumer with flow control over stream (a KV
// watcher, an object's chunks).
func (p *perms) watches(stream string) {
	p.follows(stream)
	p.pub(jsAPI("CONSUMER.CREATE", stream), "$JS.FC."+stream+".>")
}

// objects: get (and with write, put) objects of an object store bucket.
func (p *perms) objects(bucket string, write bool) {
	s := objStream(bucket)
	p.reads(s)
	// Get streams an object's chunks through an ordered push consumer with
	// flow control.
	p.watches(s)
	if write {
		// Put replaces an object's chunks: it purges the old ones.
		p.pub("$O."+bucket+".>", jsAPI("STREAM.PURGE", s))
	}
}
