package backend

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/snapsafe/snapsafe/acpi"
	"github.com/snapsafe/snapsafe/backend/vmclock"
	"github.com/snapsafe/snapsafe/runtime/api"
)

// Options configures the sources Select can build.
type Options struct {
	// AcceptSynthetic makes the ACPI source also accept root-written
	// synthetic uevents on the VMGENID device.
	AcceptSynthetic bool
	// KmsgMatch replaces the ACPI source's kernel-log match text (tests).
	KmsgMatch string
	// VMClockPath is the VMClock device; vmclock.DefaultPath when empty.
	VMClockPath string
	Logger      *slog.Logger
}

// Select builds the source named by name: "manual", "acpi", "vmclock", or
// "auto" for the best this machine offers — VMClock with a generation
// counter if usable, else ACPI VMGENID if a device with a bound driver is
// present and the kernel's signal can be read, else manual. An explicitly
// named source that cannot run, or cannot see a restore here, fails with an
// error saying why and what to do; "auto" never fails, and when what it
// picked cannot see a restore its Info says so (DetectsRestores false, and
// why). Select logs nothing: the caller reports the choice.
func Select(name string, opts Options) (Source, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.VMClockPath == "" {
		opts.VMClockPath = vmclock.DefaultPath
	}
	switch name {
	case "manual":
		return Manual(), nil
	case "acpi":
		a, err := newACPI(opts)
		if err != nil {
			return nil, err
		}
		if why := a.blindness(); why != "" {
			a.Close()
			msg := "cannot see restores here: " + why
			if opts.AcceptSynthetic {
				msg += " (synthetic uevents are a test hook, not restores)"
			}
			return nil, blindError(msg + "; use --backend auto or manual")
		}
		return a, nil
	case "vmclock":
		return NewVMClockSource(opts.VMClockPath, VMClockOptions{})
	case "auto":
		return auto(opts), nil
	}
	return nil, fmt.Errorf("unknown backend %q: use auto, acpi, vmclock or manual", name)
}

// blindError is the error of an explicitly named source that runs but cannot
// see a restore on this machine. It matches ErrNotSupported.
type blindError string

func (e blindError) Error() string { return string(e) }

func (e blindError) Is(target error) bool { return target == ErrNotSupported }

func newACPI(opts Options) (*ACPISource, error) {
	return NewACPISource(ACPIOptions{AcceptSynthetic: opts.AcceptSynthetic, KmsgMatch: opts.KmsgMatch, Logger: opts.Logger})
}

// auto picks the best source and records why in its Info.
func auto(opts Options) Source {
	vm, err := NewVMClockSource(opts.VMClockPath, VMClockOptions{})
	if err == nil {
		return withReason(vm, "auto: VMClock with a generation counter (it changes before the guest resumes)")
	}
	vmWhy := err.Error()
	if errors.Is(err, ErrNoDevice) {
		vmWhy = "no " + opts.VMClockPath
	}
	a, err := newACPI(opts)
	if err == nil {
		why := a.blindness()
		if why == "" {
			return withReason(a, "auto: no usable VMClock ("+vmWhy+"); VMGENID device with a bound driver")
		}
		if opts.AcceptSynthetic {
			// A test setup: root drives the source with synthetic
			// uevents. It says loudly that nothing else will bump.
			return withReason(a, "auto: no usable VMClock ("+vmWhy+"); VMGENID device with a bound driver, but restores will not be detected: "+
				why+"; only root-written synthetic uevents (--accept-synthetic) and snapsafectl bump move the generation")
		}
		a.Close()
		err = errors.New(why)
	}
	return withReason(Manual(), "auto: no usable VMClock ("+vmWhy+"); no usable VMGENID ("+err.Error()+
		"): restores will not be detected; the generation moves only on snapsafectl bump")
}

func hasSignal(info acpi.Info, s string) bool {
	for _, x := range info.Signals {
		if x == s {
			return true
		}
	}
	return false
}

// reasoned adds the auto-selection's reason to a source's Info.
type reasoned struct {
	Source
	why string
}

func withReason(s Source, why string) Source { return reasoned{s, why} }

func (r reasoned) Info() api.SourceInfo {
	info := r.Source.Info()
	info.Why = r.why
	return info
}

// Unwrap returns the selected source.
func (r reasoned) Unwrap() Source { return r.Source }
