//go:build !linux

package provider

// startHooks never runs here: New always fails, so no Provider exists.
func (*Provider) startHooks() (stop func()) { return func() {} }
