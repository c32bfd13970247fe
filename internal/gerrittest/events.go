package gerrittest

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"nixbus.dev/nixbus/pkg/gerrit"
)

// Account is Gerrit's account attribute.
type Account struct{ Name, Email, Username string }

// Uploader is the account events are attributed to unless set.
var Uploader = Account{Name: "Jane Developer", Email: "jane@example.com", Username: "jane"}

// Event is one stream-events event; JSON renders it in the shape of
// Gerrit's documentation (cmd-stream-events, json attributes).
type Event struct {
	// Type is the event type: patchset-created, change-merged, ...
	Type     string
	Project  string
	Branch   string
	Change   int64
	ChangeID string
	Subject  string
	Patchset int32
	Revision string
	// Ref defaults to refs/changes/NN/N/K for change events.
	Ref string
	// Kind is the patchset kind: REWORK, TRIVIAL_REBASE, NO_CODE_CHANGE, ...
	Kind string
	// Account is the uploader, submitter, author or restorer.
	Account Account
	// Comment is a comment-added text (Gerrit puts "Patch Set N:" first).
	Comment string
	// RefName, OldRev, NewRev describe a ref-updated (and a merge).
	RefName, OldRev, NewRev string
	CreatedOn               int64

	// StringNumbers renders numbers as JSON strings, as old Gerrits do.
	StringNumbers bool
	// ProjectObject renders project as {"name": ...}, as newer ones may.
	ProjectObject bool
}

// Rev is a deterministic fake commit id for a seed.
func Rev(seed string) string {
	sum := sha1.Sum([]byte(seed))
	return hex.EncodeToString(sum[:])
}

// PatchsetCreated is a patchset-created event on branch main.
func PatchsetCreated(project string, change int64, patchset int32) Event {
	return Event{Type: "patchset-created", Project: project, Branch: "main", Change: change, Patchset: patchset, Kind: "REWORK"}
}

// CommentAdded is a comment-added event whose comment is text.
func CommentAdded(project string, change int64, patchset int32, text string) Event {
	return Event{Type: "comment-added", Project: project, Branch: "main", Change: change, Patchset: patchset, Comment: text}
}

// ChangeMerged is a change-merged event onto branch with the new tip newRev.
func ChangeMerged(project, branch string, change int64, patchset int32, newRev string) Event {
	return Event{Type: "change-merged", Project: project, Branch: branch, Change: change, Patchset: patchset, NewRev: newRev}
}

// ChangeRestored is a change-restored event.
func ChangeRestored(project string, change int64, patchset int32) Event {
	return Event{Type: "change-restored", Project: project, Branch: "main", Change: change, Patchset: patchset}
}

// RefUpdated is a ref-updated event.
func RefUpdated(project, refName, oldRev, newRev string) Event {
	return Event{Type: "ref-updated", Project: project, RefName: refName, OldRev: oldRev, NewRev: newRev}
}

// DroppedOutput is what Gerrit sends when it dropped events for a slow reader.
func DroppedOutput() Event { return Event{Type: "dropped-output"} }

func (e Event) num(n int64) any {
	if e.StringNumbers {
		return strconv.FormatInt(n, 10)
	}
	return n
}

func (e Event) project() any {
	if e.ProjectObject {
		return map[string]any{"name": e.Project}
	}
	return e.Project
}

func (e Event) account() map[string]any {
	a := e.Account
	if a == (Account{}) {
		a = Uploader
	}
	return map[string]any{"name": a.Name, "email": a.Email, "username": a.Username}
}

func (e Event) defaults() Event {
	if e.CreatedOn == 0 {
		e.CreatedOn = 1700000000 + e.Change*10 + int64(e.Patchset)
	}
	if e.ChangeID == "" && e.Change > 0 {
		e.ChangeID = "I" + Rev(fmt.Sprintf("%s/%d", e.Project, e.Change))
	}
	if e.Revision == "" && e.Change > 0 {
		e.Revision = Rev(fmt.Sprintf("%s/%d/%d", e.Project, e.Change, e.Patchset))
	}
	if e.Ref == "" && e.Change > 0 && e.Patchset > 0 {
		e.Ref = gerrit.ChangeRef(e.Change, e.Patchset)
	}
	if e.Subject == "" {
		e.Subject = "Change " + strconv.FormatInt(e.Change, 10)
	}
	return e
}

func (e Event) change() map[string]any {
	return map[string]any{
		"project": e.project(), "branch": e.Branch, "id": e.ChangeID, "number": e.num(e.Change),
		"subject": e.Subject, "owner": e.account(), "url": fmt.Sprintf("https://review.example.com/c/%s/+/%d", e.Project, e.Change),
		"commitMessage": e.Subject + "\n\nChange-Id: " + e.ChangeID + "\n", "createdOn": e.num(e.CreatedOn - 100), "status": "NEW",
	}
}

func (e Event) patchSet() map[string]any {
	ps := map[string]any{
		"number": e.num(int64(e.Patchset)), "revision": e.Revision, "parents": []string{Rev("parent")},
		"ref": e.Ref, "uploader": e.account(), "author": e.account(), "createdOn": e.num(e.CreatedOn),
		"sizeInsertions": e.num(3), "sizeDeletions": e.num(-1),
	}
	if e.Kind != "" {
		ps["kind"] = e.Kind
	}
	return ps
}

// JSON renders the event as one line.
func (e Event) JSON() string {
	e = e.defaults()
	m := map[string]any{"type": e.Type, "eventCreatedOn": e.num(e.CreatedOn)}
	changeEvent := func() {
		m["change"] = e.change()
		m["patchSet"] = e.patchSet()
		m["project"] = e.project()
		m["refName"] = "refs/heads/" + e.Branch
		m["changeKey"] = map[string]any{"id": e.ChangeID}
	}
	switch e.Type {
	case "patchset-created":
		changeEvent()
		m["uploader"] = e.account()
	case "comment-added":
		changeEvent()
		m["author"] = e.account()
		text := e.Comment
		if !strings.HasPrefix(text, "Patch Set ") {
			text = fmt.Sprintf("Patch Set %d:\n\n%s", e.Patchset, text)
		}
		m["comment"] = text
		m["approvals"] = []map[string]any{{"type": "Code-Review", "description": "Code-Review", "value": "0"}}
	case "change-merged":
		changeEvent()
		m["submitter"] = e.account()
		if e.NewRev != "" {
			m["newRev"] = e.NewRev
		}
	case "change-restored":
		changeEvent()
		m["restorer"] = e.account()
		m["reason"] = "restored"
	case "change-abandoned":
		changeEvent()
		m["abandoner"] = e.account()
	case "ref-updated":
		m["submitter"] = e.account()
		m["refUpdate"] = map[string]any{"oldRev": e.OldRev, "newRev": e.NewRev, "refName": e.RefName, "project": e.project()}
	case "dropped-output":
	default:
		if e.Change > 0 {
			changeEvent()
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		// Only maps of strings and numbers: cannot happen.
		return `{"type":"` + e.Type + `"}`
	}
	return string(b)
}

// eventType reads the type of a pushed line, for subscriptions.
func eventType(line string) string {
	var v struct {
		Type string `json:"type"`
	}
	if json.Unmarshal([]byte(line), &v) != nil {
		return ""
	}
	return v.Type
}
