package gerritingest

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strconv"
	"strings"

	"nixbus.dev/nixbus/pkg/gerrit"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Why an event started no run; a fixed set, for metrics.
const (
	reasonType      = "type"
	reasonMalformed = "incomplete"
	reasonProject   = "unwatched project"
	reasonKind      = "skipped kind"
	reasonComment   = "not a recheck"
	reasonOwn       = "own comment"
	reasonBranch    = "unwatched branch"
	reasonRef       = "not a branch"
	reasonDeleted   = "branch deleted"
)

// normalizer turns Gerrit events into change events.
type normalizer struct {
	projects  map[string]bool
	branches  map[string]bool
	skipKinds map[string]bool
	recheck   string
	// self is nixbus's own account, whose comments never trigger.
	self string
	// repoURL is where a project is fetched from.
	repoURL func(project string) string
}

func newNormalizer(cfg Config, self string, repoURL func(string) string) *normalizer {
	n := &normalizer{
		projects: set(cfg.Projects), branches: map[string]bool{}, skipKinds: map[string]bool{},
		recheck: strings.TrimSpace(cfg.RecheckCommand), self: self, repoURL: repoURL,
	}
	for _, b := range cfg.Branches {
		n.branches[strings.TrimPrefix(b, "refs/heads/")] = true
	}
	for _, k := range cfg.SkipKinds {
		n.skipKinds[strings.ToUpper(k)] = true
	}
	return n
}

func set(ss []string) map[string]bool {
	m := make(map[string]bool, len(ss))
	for _, s := range ss {
		m[s] = true
	}
	return m
}

// normalize returns the change event ev calls for, or nil and the reason
// it calls for none.
func (n *normalizer) normalize(ev Event) (*nixbuspb.ChangeEvent, string) {
	switch ev.Type {
	case "patchset-created", "change-restored", "comment-added", "change-merged", "ref-updated":
	default:
		return nil, reasonType
	}
	if ev.Project == "" {
		return nil, reasonMalformed
	}
	if len(n.projects) > 0 && !n.projects[ev.Project] {
		return nil, reasonProject
	}
	switch ev.Type {
	case "patchset-created":
		if n.skipKinds[strings.ToUpper(ev.Kind)] {
			return nil, reasonKind
		}
		// A patchset is created once: its id needs nothing but itself.
		return n.patchset(ev, nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, "patchset", ev.Revision)
	case "change-restored":
		return n.patchset(ev, nixbuspb.ChangeEvent_KIND_CHANGE_RESTORED, "restored", strconv.FormatInt(ev.CreatedOn, 10))
	case "comment-added":
		if !isRecheck(ev.Comment, n.recheck) {
			return nil, reasonComment
		}
		if n.self != "" && ev.Account == n.self {
			return nil, reasonOwn
		}
		return n.patchset(ev, nixbuspb.ChangeEvent_KIND_RECHECK, "recheck", strconv.FormatInt(ev.CreatedOn, 10), ev.Account, ev.Comment)
	case "change-merged":
		rev := firstOf(ev.NewRev, ev.Revision)
		return n.branch(ev, nixbuspb.ChangeEvent_KIND_CHANGE_MERGED, ev.Branch, rev)
	default: // ref-updated
		ref := ev.RefName
		var branch string
		switch {
		case strings.HasPrefix(ref, "refs/heads/"):
			branch = strings.TrimPrefix(ref, "refs/heads/")
		case ref != "" && !strings.HasPrefix(ref, "refs/"):
			branch = ref // Gerrit before 2.x sent bare branch names
		default:
			// refs/changes/* (patchsets, and NoteDb's /meta), tags, config.
			return nil, reasonRef
		}
		if ev.NewRev == "" || strings.Trim(ev.NewRev, "0") == "" {
			return nil, reasonDeleted
		}
		return n.branch(ev, nixbuspb.ChangeEvent_KIND_REF_UPDATED, branch, ev.NewRev)
	}
}

func (n *normalizer) patchset(ev Event, kind nixbuspb.ChangeEvent_Kind, idParts ...string) (*nixbuspb.ChangeEvent, string) {
	if ev.Change <= 0 || ev.Patchset <= 0 {
		return nil, reasonMalformed
	}
	ref := gerrit.ChangeRef(ev.Change, ev.Patchset)
	rev := ""
	if gerrit.IsCommit(ev.Revision) {
		rev = ev.Revision
	}
	id := eventID(idParts[0], append([]string{ev.Project, strconv.FormatInt(ev.Change, 10), strconv.Itoa(int(ev.Patchset))}, idParts[1:]...)...)
	return &nixbuspb.ChangeEvent{
		EventId: id, Kind: kind, Project: ev.Project, Change: ev.Change, Patchset: ev.Patchset,
		Ref: ref, Revision: rev, Branch: ev.Branch, RepoUrl: n.repoURL(ev.Project),
		CreatedUnix: ev.CreatedOn, ChangeId: ev.ChangeID, Uploader: ev.Account,
	}, ""
}

// branch is a post-merge run of branch at rev. It names no change: it is
// about the branch, and gets no vote. A merge shows up both as
// change-merged and as ref-updated; both get the same id from (project,
// branch, rev), so JetStream keeps the first and the run happens once.
func (n *normalizer) branch(ev Event, kind nixbuspb.ChangeEvent_Kind, branch, rev string) (*nixbuspb.ChangeEvent, string) {
	if len(n.branches) == 0 || !n.branches[branch] {
		return nil, reasonBranch
	}
	ref, err := gerrit.BranchRef(branch)
	if err != nil || !gerrit.IsCommit(rev) {
		return nil, reasonMalformed
	}
	return &nixbuspb.ChangeEvent{
		EventId: eventID("branch", ev.Project, ref, rev), Kind: kind, Project: ev.Project,
		Ref: ref, Revision: rev, Branch: branch, RepoUrl: n.repoURL(ev.Project),
		CreatedUnix: ev.CreatedOn, ChangeId: ev.ChangeID, Uploader: ev.Account,
	}, ""
}

// eventID is deterministic in the event's identity, so the same event
// sent again (after a reconnect, by a second ingest) gets the same id.
func eventID(kind string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return "gerrit-" + kind + "-" + hex.EncodeToString(h.Sum(nil)[:16])
}

var (
	countLine  = regexp.MustCompile(`^\(\d+ (inline )?comments?\)$`)
	psHeaderRe = regexp.MustCompile(`^Patch Set \d+:`)
)

// isRecheck reports whether a review comment is the recheck command:
// its first line of text, after Gerrit's "Patch Set N: <votes>" header
// and "(N comments)" counts, is the command (any case).
func isRecheck(comment, command string) bool {
	if command == "" {
		return false
	}
	lines := strings.Split(strings.ReplaceAll(comment, "\r\n", "\n"), "\n")
	if len(lines) > 0 && psHeaderRe.MatchString(lines[0]) {
		lines = lines[1:]
	}
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || countLine.MatchString(l) {
			continue
		}
		return strings.EqualFold(l, command)
	}
	return false
}
