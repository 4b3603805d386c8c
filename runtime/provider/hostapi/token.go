package hostapi

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
)

// readToken reads the bearer token of --host-token-file: the file must be a
// regular file (no symbolic link), owned by root or the provider's user,
// and neither readable nor writable by anyone else — a token others can
// read lets them push restores, and one others can write lets them choose
// it.
func readToken(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("--host-token-file: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("--host-token-file %s is not a regular file: point it at the token itself", path)
	case !ok:
		return nil, fmt.Errorf("--host-token-file %s: cannot read its owner", path)
	case st.Uid != 0 && st.Uid != uint32(os.Geteuid()):
		return nil, fmt.Errorf("--host-token-file %s is owned by uid %d: it must be root's or the provider's (chown it)", path, st.Uid)
	case fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("--host-token-file %s has mode %04o: others may read or write it; chmod 0600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--host-token-file: %w", err)
	}
	tok := bytes.TrimSpace(b)
	if len(tok) < 16 {
		return nil, fmt.Errorf("--host-token-file %s holds %d bytes: use a random token of at least 16 (e.g. head -c 32 /dev/urandom | base64)", path, len(tok))
	}
	return tok, nil
}
