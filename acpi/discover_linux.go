package acpi

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Discover finds the VMGENID devices in sysfs. It returns a wrapped
// ErrNoDevice when there is none, and the devices found together with a
// wrapped ErrNoDriver when none of them has a driver bound.
func Discover() ([]Device, error) {
	return discover(sysfsRoot)
}

// kernelRelease returns the running kernel's release, as uname -r prints it.
func kernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}
