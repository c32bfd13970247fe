package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/changeevent"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// cancelRun publishes the run's Cancel: the planner stops releasing its
// jobs, builders kill its builds, and it gets no vote.
func (s *Service) cancelRun(w http.ResponseWriter, r *http.Request, u user) error {
	id := r.PathValue("run")
	rs, err := s.lookRun(r, id)
	if err != nil {
		return err
	}
	ended := rs.verdict != nil
	rs.mu.Unlock()
	if ended {
		return userError{http.StatusConflict, "This run has ended; there is nothing to cancel."}
	}
	c := &nixbuspb.Cancel{RunId: id, Reason: bus.Truncate("cancelled on the web page by "+u.Name, 200)}
	if err := s.pub.Publish(r.Context(), bus.RunSubject(id, bus.RunCancelKind), bus.MsgIDCancel(id), c, nil); err != nil {
		return fmt.Errorf("publish cancel: %w", err)
	}
	http.Redirect(w, r, "/runs/"+url.PathEscape(id), http.StatusSeeOther)
	return nil
}

// restartRun publishes a new manual change event for the run's change and
// patchset (or ref): a new run, which supersedes this one if it still runs.
func (s *Service) restartRun(w http.ResponseWriter, r *http.Request, u user) error {
	id := r.PathValue("run")
	rs, err := s.lookRun(r, id)
	if err != nil {
		return err
	}
	var prev *nixbuspb.ChangeEvent
	if rs.started != nil {
		prev = rs.started.GetChange()
	}
	rs.mu.Unlock()
	if prev == nil {
		return userError{http.StatusConflict, "This run has no change event to start again."}
	}
	ev, err := changeevent.Again(prev)
	if err != nil {
		return err
	}
	ev.Uploader = bus.Truncate(u.Name, 100)
	if err := s.pub.Publish(r.Context(), bus.ChangeSubject(ev.GetProject()), bus.MsgIDChange(ev.GetEventId()), ev, nil); err != nil {
		return fmt.Errorf("publish change event: %w", err)
	}
	http.Redirect(w, r, "/runs/"+url.PathEscape(bus.RunID(ev.GetEventId())), http.StatusSeeOther)
	return nil
}

// restartJob asks the planner to build a failed job of an ended run again.
func (s *Service) restartJob(w http.ResponseWriter, r *http.Request, u user) error {
	id, drv := r.PathValue("run"), r.PathValue("drv")
	if !drvBaseRe.MatchString(drv) {
		return userError{http.StatusNotFound, "No such job."}
	}
	rs, err := s.lookRun(r, id)
	if err != nil {
		return err
	}
	var row *jobRow
	for _, j := range rs.rows(s.buildingSet(r, id)) {
		if j.DrvBase == drv {
			row = &j
			break
		}
	}
	rs.mu.Unlock()
	if row == nil {
		return userError{http.StatusNotFound, "No such job in this run."}
	}
	if !row.Restartable {
		return userError{http.StatusConflict, "Only a job whose build failed, in a run that has ended and was not cancelled, can be restarted."}
	}
	now := time.Now().UnixMilli()
	m := &nixbuspb.RestartJob{RunId: id, Attr: row.Attr, DrvPath: row.Drv, RequestedBy: bus.Truncate(u.Name, 100), RequestedUnixMs: now}
	if err := s.pub.Publish(r.Context(), bus.RunSubject(id, bus.RunRestartKind), bus.MsgIDRestart(id, row.Drv, now), m, nil); err != nil {
		return fmt.Errorf("publish restart: %w", err)
	}
	http.Redirect(w, r, "/runs/"+url.PathEscape(id)+"/jobs/"+url.PathEscape(drv), http.StatusSeeOther)
	return nil
}

// lookRun is the run's state, locked, or a user error.
func (s *Service) lookRun(r *http.Request, id string) (*runState, error) {
	if !bus.ValidRunID(id) {
		return nil, userError{http.StatusNotFound, "No such run."}
	}
	rs, err := s.runs.look(r.Context(), s.js, id)
	if errors.Is(err, errNoRun) {
		return nil, userError{http.StatusNotFound, "No such run."}
	}
	return rs, err
}
