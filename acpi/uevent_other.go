//go:build !linux

package acpi

func openUevent(int) (conn, error) { return nil, ErrNotSupported }

func checkUevent() error { return ErrNotSupported }
