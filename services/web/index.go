package web

import (
	"strconv"
	"sync"

	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Run states as the pages show them (and as ?status= filters them).
const (
	stRunning   = "running"
	stSucceeded = "succeeded"
	stFailed    = "failed"
	stCancelled = "cancelled"
)

// runSummary is one row of the runs page.
type runSummary struct {
	ID        string
	seq       uint64
	Project   string
	Change    int64
	Patchset  int32
	Ref       string
	Kind      string
	StartedMs int64
	Status    string
	// From the verdict, when there is one.
	Jobs, Succeeded, Cached, Failed, Skipped int64
	DurationMs                               int64
	EvalError                                string
	Cancelling                               bool
}

// index keeps the newest runs, at most max, for the runs page: fed by
// RunStarted and Cancel messages from NIXBUS_RUNS and verdicts from
// NIXBUS_REPORTS, in the order each stream has them.
type index struct {
	mu    sync.RWMutex
	max   int
	byID  map[string]*runSummary
	order []*runSummary // ascending stream sequence of RunStarted
	// early holds verdicts read before their run's start (the two
	// streams are read apart); bounded like the runs.
	early map[string]*nixbuspb.RunVerdict
}

func newIndex(max int) *index {
	return &index{max: max, byID: map[string]*runSummary{}, early: map[string]*nixbuspb.RunVerdict{}}
}

func (ix *index) started(seq uint64, m *nixbuspb.RunStarted) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	id := m.GetRunId()
	if _, ok := ix.byID[id]; ok || id == "" {
		return
	}
	ch := m.GetChange()
	r := &runSummary{
		ID: id, seq: seq, Project: ch.GetProject(), Change: ch.GetChange(), Patchset: ch.GetPatchset(), Ref: ch.GetRef(),
		Kind: kindWord(ch.GetKind()), StartedMs: m.GetStartedUnixMs(), Status: stRunning,
	}
	if v, ok := ix.early[id]; ok {
		delete(ix.early, id)
		applyVerdict(r, v)
	}
	ix.byID[id] = r
	ix.order = append(ix.order, r)
	if len(ix.order) > ix.max {
		drop := len(ix.order) - ix.max
		for _, old := range ix.order[:drop] {
			delete(ix.byID, old.ID)
		}
		ix.order = append(ix.order[:0:0], ix.order[drop:]...)
	}
}

func (ix *index) cancelled(runID string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if r, ok := ix.byID[runID]; ok && r.Status == stRunning {
		r.Cancelling = true
	}
}

func (ix *index) verdict(v *nixbuspb.RunVerdict) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	r, ok := ix.byID[v.GetRunId()]
	if !ok {
		if len(ix.early) >= ix.max {
			clear(ix.early)
		}
		ix.early[v.GetRunId()] = v
		return
	}
	applyVerdict(r, v)
}

func applyVerdict(r *runSummary, v *nixbuspb.RunVerdict) {
	r.Status = runStatusWord(v.GetStatus())
	r.Jobs, r.Succeeded, r.Cached, r.Failed, r.Skipped = v.GetJobCount(), v.GetSucceededCount(), v.GetCachedCount(), v.GetFailedCount(), v.GetSkippedCount()
	r.DurationMs = v.GetDurationMs()
	r.EvalError = v.GetEvalError()
	r.Cancelling = false
}

func (ix *index) get(runID string) (runSummary, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	r, ok := ix.byID[runID]
	if !ok {
		return runSummary{}, false
	}
	return *r, true
}

// runFilter is what the runs page's form asks for.
type runFilter struct {
	Project string
	Change  string
	Status  string
}

func (f runFilter) match(r *runSummary) bool {
	return (f.Project == "" || r.Project == f.Project) &&
		(f.Change == "" || strconv.FormatInt(r.Change, 10) == f.Change) &&
		(f.Status == "" || r.Status == f.Status)
}

// list returns page (from 0) of the runs matching f, newest first, and
// how many match in all.
func (ix *index) list(f runFilter, page, size int) ([]runSummary, int) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []runSummary
	matched := 0
	from := page * size
	for i := len(ix.order) - 1; i >= 0; i-- {
		r := ix.order[i]
		if !f.match(r) {
			continue
		}
		if matched >= from && matched < from+size {
			out = append(out, *r)
		}
		matched++
	}
	return out, matched
}

// projects lists the known projects, for the filter form.
func (ix *index) projects() []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	seen := map[string]bool{}
	var out []string
	for i := len(ix.order) - 1; i >= 0 && len(out) < 200; i-- {
		if p := ix.order[i].Project; !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func runStatusWord(s nixbuspb.RunStatus) string {
	switch s {
	case nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED:
		return stSucceeded
	case nixbuspb.RunStatus_RUN_STATUS_CANCELLED:
		return stCancelled
	default:
		return stFailed
	}
}

func kindWord(k nixbuspb.ChangeEvent_Kind) string {
	switch k {
	case nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED:
		return "patchset"
	case nixbuspb.ChangeEvent_KIND_CHANGE_MERGED:
		return "merged"
	case nixbuspb.ChangeEvent_KIND_REF_UPDATED:
		return "push"
	case nixbuspb.ChangeEvent_KIND_RECHECK:
		return "recheck"
	case nixbuspb.ChangeEvent_KIND_MANUAL:
		return "manual"
	case nixbuspb.ChangeEvent_KIND_CHANGE_RESTORED:
		return "restored"
	}
	return "event"
}
