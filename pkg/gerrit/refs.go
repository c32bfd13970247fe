package gerrit

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ChangeRef is the ref Gerrit stores a patchset under:
// refs/changes/<last two digits of change>/<change>/<patchset>.
func ChangeRef(change int64, patchset int32) string {
	return fmt.Sprintf("refs/changes/%02d/%d/%d", change%100, change, patchset)
}

var commitRe = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// IsCommit reports whether s is a full git commit id (SHA-1, or SHA-256),
// the only form of revision nixbus passes on to git.
func IsCommit(s string) bool { return commitRe.MatchString(s) }

var changeRefRe = regexp.MustCompile(`^refs/changes/([0-9]{2})/([1-9][0-9]{0,17})/([1-9][0-9]{0,8})$`)

// ParseChangeRef reads refs/changes/NN/N/K, checking NN against N.
func ParseChangeRef(ref string) (change int64, patchset int32, err error) {
	m := changeRefRe.FindStringSubmatch(ref)
	if m == nil {
		return 0, 0, fmt.Errorf("ref %q is not refs/changes/NN/<change>/<patchset>", ref)
	}
	change, err = strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("ref %q: %w", ref, err)
	}
	ps, err := strconv.ParseInt(m[3], 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("ref %q: %w", ref, err)
	}
	if fmt.Sprintf("%02d", change%100) != m[1] {
		return 0, 0, fmt.Errorf("ref %q: shard %s does not match change %d", ref, m[1], change)
	}
	return change, int32(ps), nil
}

var branchRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*$`)

// ValidBranch reports whether branch (without refs/heads/) is a branch name
// safe to hand to git: plain path components that do not start with '.'
// or '-', no "..", no ".lock" component ending, nothing git would expand.
func ValidBranch(branch string) bool {
	if len(branch) > 200 || !branchRe.MatchString(branch) || strings.Contains(branch, "..") {
		return false
	}
	for _, c := range strings.Split(branch, "/") {
		if strings.HasSuffix(c, ".lock") || strings.HasSuffix(c, ".") {
			return false
		}
	}
	return true
}

// BranchRef is refs/heads/<branch>, or an error for an unsafe name.
func BranchRef(branch string) (string, error) {
	branch = strings.TrimPrefix(branch, "refs/heads/")
	if !ValidBranch(branch) {
		return "", fmt.Errorf("branch %q is not a safe branch name", branch)
	}
	return "refs/heads/" + branch, nil
}

// CheckRef accepts refs/changes/NN/N/K and refs/heads/<safe branch>.
func CheckRef(ref string) error {
	if strings.HasPrefix(ref, "refs/changes/") {
		_, _, err := ParseChangeRef(ref)
		return err
	}
	if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok && ValidBranch(b) {
		return nil
	}
	return fmt.Errorf("ref %q is neither refs/changes/NN/N/K nor refs/heads/<branch>", ref)
}
