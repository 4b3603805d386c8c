//go:build !linux

package acpi

func openKmsg() (conn, error) { return nil, ErrNotSupported }

func countKmsgHistory() (int, error) { return 0, ErrNotSupported }
