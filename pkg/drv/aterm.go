package drv

import (
	"bytes"
	"fmt"
)

// Derivation is a parsed .drv (ATerm) file.
type Derivation struct {
	// Outputs maps output name to store path (empty for content-addressed
	// outputs whose path is not known in advance).
	Outputs map[string]string
	// InputDrvs are the input derivations' paths, in file order.
	InputDrvs []string
	InputSrcs []string
	System    string
	Builder   string
	Args      []string
	Env       map[string]string
}

// ParseATerm parses a .drv file: Derive(outputs, inputDrvs, inputSrcs,
// system, builder, args, env), or the DrvWithVersion("<v>", ...) form of
// derivations using experimental features. It returns an error, never
// panics, on anything else.
func ParseATerm(data []byte) (*Derivation, error) {
	d := &Derivation{}
	if err := parseATerm(data, d, false); err != nil {
		return nil, err
	}
	return d, nil
}

// parseInputDrvs reads only the input derivations of a .drv file.
func parseInputDrvs(data []byte) ([]string, error) {
	var d Derivation
	if err := parseATerm(data, &d, true); err != nil {
		return nil, err
	}
	return d.InputDrvs, nil
}

type aterm struct {
	data []byte
	pos  int
}

func parseATerm(data []byte, d *Derivation, onlyInputs bool) error {
	p := &aterm{data: data}
	if err := p.derive(d, onlyInputs); err != nil {
		return fmt.Errorf("parse derivation at byte %d: %w", p.pos, err)
	}
	return nil
}

func (p *aterm) derive(d *Derivation, onlyInputs bool) error {
	switch {
	case p.lit("Derive(["):
	case p.lit("DrvWithVersion("):
		if _, err := p.str(); err != nil {
			return err
		}
		if !p.lit(",[") {
			return p.unexpected("',['")
		}
	default:
		return p.unexpected("Derive(")
	}
	// Outputs: [("out","/nix/store/...","hashAlgo","hash"), ...]
	if !onlyInputs {
		d.Outputs = map[string]string{}
	}
	if err := p.list(func() error {
		fields, err := p.strTuple(4)
		if err != nil {
			return err
		}
		if !onlyInputs {
			d.Outputs[fields[0]] = fields[1]
		}
		return nil
	}); err != nil {
		return fmt.Errorf("outputs: %w", err)
	}
	if !p.lit(",[") {
		return p.unexpected("',['")
	}
	// Input derivations: [("/nix/store/x.drv",["out"]), ...]; with dynamic
	// derivations the outputs are a tuple ([...],[...]), which is skipped.
	if err := p.list(func() error {
		if !p.lit("(") {
			return p.unexpected("'('")
		}
		path, err := p.str()
		if err != nil {
			return err
		}
		if !p.lit(",") {
			return p.unexpected("','")
		}
		if err := p.skip(); err != nil {
			return err
		}
		if !p.lit(")") {
			return p.unexpected("')'")
		}
		d.InputDrvs = append(d.InputDrvs, path)
		return nil
	}); err != nil {
		return fmt.Errorf("inputDrvs: %w", err)
	}
	if onlyInputs {
		return nil
	}
	if !p.lit(",") {
		return p.unexpected("','")
	}
	var err error
	if d.InputSrcs, err = p.strList(); err != nil {
		return fmt.Errorf("inputSrcs: %w", err)
	}
	if !p.lit(",") {
		return p.unexpected("','")
	}
	if d.System, err = p.str(); err != nil {
		return fmt.Errorf("system: %w", err)
	}
	if !p.lit(",") {
		return p.unexpected("','")
	}
	if d.Builder, err = p.str(); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	if !p.lit(",") {
		return p.unexpected("','")
	}
	if d.Args, err = p.strList(); err != nil {
		return fmt.Errorf("args: %w", err)
	}
	if !p.lit(",[") {
		return p.unexpected("',['")
	}
	d.Env = map[string]string{}
	if err := p.list(func() error {
		kv, err := p.strTuple(2)
		if err != nil {
			return err
		}
		d.Env[kv[0]] = kv[1]
		return nil
	}); err != nil {
		return fmt.Errorf("env: %w", err)
	}
	if !p.lit(")") {
		return p.unexpected("')'")
	}
	if p.pos != len(p.data) && len(bytes.TrimSpace(p.data[p.pos:])) != 0 {
		return p.unexpected("end of file")
	}
	return nil
}

func (p *aterm) lit(s string) bool {
	if len(p.data)-p.pos >= len(s) && string(p.data[p.pos:p.pos+len(s)]) == s {
		p.pos += len(s)
		return true
	}
	return false
}

func (p *aterm) unexpected(want string) error {
	if p.pos >= len(p.data) {
		return fmt.Errorf("expected %s, found end of file", want)
	}
	// The file is not quoted: a hostile drvPath may name any file.
	return fmt.Errorf("expected %s", want)
}

// list reads the elements of a list whose '[' was consumed, through ']'.
func (p *aterm) list(elem func() error) error {
	if p.lit("]") {
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		if p.lit("]") {
			return nil
		}
		if !p.lit(",") {
			return p.unexpected("',' or ']'")
		}
	}
}

func (p *aterm) strList() ([]string, error) {
	if !p.lit("[") {
		return nil, p.unexpected("'['")
	}
	var out []string
	err := p.list(func() error {
		s, err := p.str()
		out = append(out, s)
		return err
	})
	return out, err
}

// strTuple reads ("a","b",...) of exactly n strings.
func (p *aterm) strTuple(n int) ([]string, error) {
	if !p.lit("(") {
		return nil, p.unexpected("'('")
	}
	out := make([]string, n)
	for i := range n {
		if i > 0 && !p.lit(",") {
			return nil, p.unexpected("','")
		}
		var err error
		if out[i], err = p.str(); err != nil {
			return nil, err
		}
	}
	if !p.lit(")") {
		return nil, p.unexpected("')'")
	}
	return out, nil
}

// str reads a quoted string with nix's escapes (\" \\ \n \r \t).
func (p *aterm) str() (string, error) {
	if !p.lit(`"`) {
		return "", p.unexpected("'\"'")
	}
	start := p.pos
	i := bytes.IndexByte(p.data[start:], '"')
	if i < 0 {
		return "", fmt.Errorf("unterminated string")
	}
	if bytes.IndexByte(p.data[start:start+i], '\\') < 0 {
		p.pos = start + i + 1
		return string(p.data[start : start+i]), nil
	}
	var b []byte
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch c {
		case '"':
			p.pos++
			return string(b), nil
		case '\\':
			if p.pos+1 >= len(p.data) {
				return "", fmt.Errorf("unterminated string")
			}
			p.pos++
			switch e := p.data[p.pos]; e {
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			default:
				b = append(b, e)
			}
		default:
			b = append(b, c)
		}
		p.pos++
	}
	return "", fmt.Errorf("unterminated string")
}

// skip skips one term: a string, a list or a tuple of terms.
func (p *aterm) skip() error {
	var stack []byte
	for {
		if p.pos >= len(p.data) {
			return p.unexpected("a term")
		}
		switch c := p.data[p.pos]; c {
		case '"':
			if _, err := p.str(); err != nil {
				return err
			}
		case '[', '(':
			closer := byte(']')
			if c == '(' {
				closer = ')'
			}
			if p.pos+1 < len(p.data) && p.data[p.pos+1] == closer {
				p.pos += 2 // an empty list or tuple is a whole term
				break
			}
			stack = append(stack, c)
			p.pos++
			continue
		default:
			return p.unexpected("a term")
		}
		// After a term: close brackets, or a comma before the next term.
		for {
			if len(stack) == 0 {
				return nil
			}
			if p.pos >= len(p.data) {
				return p.unexpected("',' or a closing bracket")
			}
			c := p.data[p.pos]
			if c == ',' {
				p.pos++
				break
			}
			want := byte(']')
			if stack[len(stack)-1] == '(' {
				want = ')'
			}
			if c != want {
				return p.unexpected(fmt.Sprintf("%q", want))
			}
			stack = stack[:len(stack)-1]
			p.pos++
		}
	}
}
