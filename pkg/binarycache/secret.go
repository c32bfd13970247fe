package binarycache

import "flag"

// secretFlag registers a flag naming a credential file.
func secretFlag(fs *flag.FlagSet, p *string, name, credential, usage string) {
	_ = credential
	fs.StringVar(p, name, "", usage)
}
