//go:build !linux

package provider

import "syscall"

// None of these runs here: New always fails, so no Provider exists.

func (p *Provider) readWatchersFile() ([]byte, error) { return nil, ErrNotSupported }

func (p *Provider) writeWatchersFile([]byte) error { return ErrNotSupported }

func peerStart(syscall.Conn, int32) uint64 { return 0 }

func sameProcess(int32, uint64) (int, bool) { return -1, false }

func exited(int, int32, uint64) bool { return true }

func closePidfd(int) {}
