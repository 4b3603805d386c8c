package backend

import (
	"fmt"
	"log/slog"
)

// Options configures the sources Select can build.
type Options struct {
	// AcceptSynthetic makes the ACPI source also accept root-written
	// synthetic uevents on the VMGENID device.
	AcceptSynthetic bool
	Logger          *slog.Logger
}

// Select builds the source named by name: "manual", or "auto" for the best
// source this machine offers.
func Select(name string, opts Options) (Source, error) {
	switch name {
	case "manual", "auto":
		return Manual(), nil
	}
	return nil, fmt.Errorf("unknown backend %q: use auto, acpi, vmclock or manual", name)
}
