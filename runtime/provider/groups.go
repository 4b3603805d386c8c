package provider

import (
	"fmt"
	"os/user"
	"strconv"
)

// lookupGID resolves a group name (or number) given with flag.
func lookupGID(name, flag string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if g, err = user.LookupGroupId(name); err != nil {
			return -1, fmt.Errorf("%s %s: no such group: name an existing group", flag, name)
		}
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, fmt.Errorf("%s %s has gid %q: %w", flag, name, g.Gid, err)
	}
	return gid, nil
}
