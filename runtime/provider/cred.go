package provider

import (
	"strconv"
	"strings"
)

// procInfo is what the provider reads of a peer process from
// /proc/<pid>/status.
type procInfo struct {
	comm   string   // the command name (Name:), at most 15 bytes
	capEff uint64   // effective capabilities
	groups []uint32 // supplementary groups
}

// inGroup reports whether gid (-1: no group) is the primary group or one of
// the supplementary groups.
func inGroup(gid int, primary uint32, groups []uint32) bool {
	if gid < 0 {
		return false
	}
	if primary == uint32(gid) {
		return true
	}
	for _, g := range groups {
		if g == uint32(gid) {
			return true
		}
	}
	return false
}

// parseProcStatus extracts the command name, the effective capabilities
// and the supplementary groups from the text of /proc/<pid>/status.
func parseProcStatus(s string) procInfo {
	var info procInfo
	for _, line := range strings.Split(s, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch key {
		case "Name":
			// The name is the rest of the line after the tab, escaped by
			// the kernel (a newline in it reads as \n), so it is one line.
			info.comm = strings.TrimPrefix(val, "\t")
		case "CapEff":
			info.capEff, _ = strconv.ParseUint(strings.TrimSpace(val), 16, 64)
		case "Groups":
			for _, f := range strings.Fields(val) {
				if g, err := strconv.ParseUint(f, 10, 32); err == nil {
					info.groups = append(info.groups, uint32(g))
				}
			}
		}
	}
	return info
}
