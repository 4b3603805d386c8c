//go:build !linux

package acpi

// Discover finds the VMGENID devices in sysfs; on this operating system it
// returns ErrNotSupported.
func Discover() ([]Device, error) {
	return nil, ErrNotSupported
}

func kernelRelease() (string, error) { return "", ErrNotSupported }
