package gerrittest

import (
	"fmt"
	"strconv"
	"strings"
)

// Split splits an SSH command line the way Gerrit's SSH daemon does before
// any command sees it: blanks (space, tab) separate words; single quotes
// keep everything up to the next single quote literally; double quotes
// group words but keep single quotes; outside single quotes a backslash
// makes the next character literal (a trailing one is kept); empty words
// vanish. Newlines are ordinary characters.
func Split(line string) []string {
	var (
		words          []string
		cur            strings.Builder
		single, double bool
	)
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch r {
		case ' ', '\t':
			if single || double {
				cur.WriteRune(r)
			} else if cur.Len() > 0 {
				words = append(words, cur.String())
				cur.Reset()
			}
		case '"':
			if single {
				cur.WriteRune(r)
			} else {
				double = !double
			}
		case '\'':
			if double {
				cur.WriteRune(r)
			} else {
				single = !single
			}
		case '\\':
			if single || i == len(rs)-1 {
				cur.WriteRune(r)
			} else {
				i++
				cur.WriteRune(rs[i])
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		words = append(words, cur.String())
	}
	return words
}

// ReviewCommand is one `gerrit review` command as received, and what
// Gerrit made of it.
type ReviewCommand struct {
	// Raw is the command line byte for byte.
	Raw string
	// Args is Raw as Gerrit's parser splits it.
	Args     []string
	Project  string
	Branch   string
	Message  string
	Tag      string
	Notify   string
	Labels   map[string]string
	Change   int64
	Patchset int32
	// Revision is set when the patchset was named by commit.
	Revision string
	Flags    []string
}

var (
	reviewValueOpts = map[string]string{
		"--project": "project", "-p": "project", "--branch": "branch", "-b": "branch",
		"--message": "message", "-m": "message", "--label": "label", "-l": "label",
		"--tag": "tag", "-t": "tag", "--notify": "notify", "-n": "notify",
		"--verified": "Verified", "--code-review": "Code-Review",
	}
	reviewFlags = map[string]bool{
		"--abandon": true, "--restore": true, "--rebase": true, "--submit": true, "-s": true,
		"--json": true, "-j": true, "--strict-labels": true, "--move": true,
	}
)

// ParseReview reads `gerrit review` arguments (args[0:2] are "gerrit",
// "review") the way Gerrit's option parser would, refusing what it would.
func ParseReview(args []string) (ReviewCommand, error) {
	rc := ReviewCommand{Args: args, Labels: map[string]string{}}
	if len(args) < 2 || args[0] != "gerrit" || args[1] != "review" {
		return rc, fmt.Errorf("not a gerrit review command")
	}
	var targets []string
	for i := 2; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := a, "", false
		if strings.HasPrefix(a, "--") {
			name, value, hasValue = strings.Cut(a, "=")
		}
		if reviewFlags[name] {
			rc.Flags = append(rc.Flags, name)
			continue
		}
		field, ok := reviewValueOpts[name]
		if !ok {
			if strings.HasPrefix(a, "-") {
				return rc, fmt.Errorf("%q is not a valid option", a)
			}
			targets = append(targets, a)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return rc, fmt.Errorf("option %q takes an operand", name)
			}
			i++
			value = args[i]
		}
		switch field {
		case "project":
			rc.Project = value
		case "branch":
			rc.Branch = value
		case "message":
			rc.Message = value
		case "tag":
			rc.Tag = value
		case "notify":
			rc.Notify = value
		case "label":
			l, v, ok := strings.Cut(value, "=")
			if !ok || l == "" {
				return rc, fmt.Errorf("invalid label %q: want NAME=VALUE", value)
			}
			if _, err := strconv.ParseInt(v, 10, 16); err != nil {
				return rc, fmt.Errorf("invalid label value %q", value)
			}
			rc.Labels[l] = v
		default:
			rc.Labels[field] = value
		}
	}
	if len(targets) != 1 {
		return rc, fmt.Errorf("want exactly one {COMMIT | CHANGE,PATCHSET}, got %d", len(targets))
	}
	if c, ps, ok := strings.Cut(targets[0], ","); ok {
		change, err := strconv.ParseInt(c, 10, 64)
		if err != nil || change <= 0 {
			return rc, fmt.Errorf("%q is not a valid patch set", targets[0])
		}
		p, err := strconv.ParseInt(ps, 10, 32)
		if err != nil || p <= 0 {
			return rc, fmt.Errorf("%q is not a valid patch set", targets[0])
		}
		rc.Change, rc.Patchset = change, int32(p)
	} else {
		rc.Revision = targets[0]
	}
	return rc, nil
}
