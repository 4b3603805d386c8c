package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"6.12.95+deb12-amd64", "6.1.0-56-amd64", 1},
		{"6.9.0-1-amd64", "6.12.95+deb12-amd64", -1},
		{"6.1.0-56-amd64", "6.1.0-9-amd64", 1},
		{"6.1.0-56-amd64", "6.1.0-56-amd64", 0},
		{"6.1.0-56-amd64", "6.1.0-56-cloud-amd64", -1},
		{"6.1", "6.1.0", -1},
	} {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := compareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

func TestFindKernels(t *testing.T) {
	dir := t.TempDir()
	kernel := func(version, config string) string {
		p := filepath.Join(dir, "vmlinuz-"+version)
		if err := os.WriteFile(p, []byte("kernel"), 0o600); err != nil {
			t.Fatal(err)
		}
		if config != "" {
			if err := os.WriteFile(filepath.Join(dir, "config-"+version), []byte(config), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	// Lines as in Debian's /boot/config-6.1.0-56-amd64.
	builtin := "CONFIG_HYPERV_VTL_MODE=y\nCONFIG_VMGENID=y\nCONFIG_NITRO_ENCLAVES=m\n"
	k612, k61 := kernel("6.12.95+deb12-amd64", builtin), kernel("6.1.0-56-amd64", builtin)
	for _, tc := range []struct {
		paths []string
		want  []string // the kernels, oldest first
		err   string
	}{
		{paths: []string{k612, k61}, want: []string{k61, k612}},
		{paths: []string{kernel("custom", "")}, want: []string{filepath.Join(dir, "vmlinuz-custom")}}, // no config: a warning, and the checks decide
		{paths: []string{k61, kernel("modular", "CONFIG_VMGENID=m\n")}, err: "is a module"},
		{paths: []string{kernel("without", "# CONFIG_VMGENID is not set\n")}, err: "no vmgenid driver"},
		{paths: []string{filepath.Join(dir, "vmlinuz-absent")}, err: "no such file"},
	} {
		got, err := findKernels(tc.paths)
		switch {
		case tc.err == "" && (err != nil || !slices.Equal(got, tc.want)):
			t.Errorf("findKernels(%v) = %q, %v; want %q", tc.paths, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("findKernels(%v) error = %v, want %q", tc.paths, err, tc.err)
		}
	}
}

func TestCheckApplets(t *testing.T) {
	dir := t.TempDir()
	bb := filepath.Join(dir, "busybox")
	if err := os.WriteFile(bb, []byte("#!/bin/sh\necho cat\necho insmod\necho ip\necho sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkApplets(bb, []string{"/lib/modules/v/failover.ko"}); err != nil {
		t.Errorf("uncompressed modules: %v", err)
	}
	err := checkApplets(bb, []string{"a.ko.xz", "b.ko.xz", "c.ko.gz"})
	if err == nil || !strings.Contains(err.Error(), "has no applet xzcat, zcat,") {
		t.Errorf("compressed modules: %v", err)
	}
}
