package main

import (
	"os"
	"path/filepath"
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
	got := newestKernel([]string{"/boot/vmlinuz-6.1.0-56-amd64", "/boot/vmlinuz-6.12.95+deb12-amd64", "/boot/vmlinuz-6.9.0-1-amd64"})
	if got != "/boot/vmlinuz-6.12.95+deb12-amd64" {
		t.Errorf("newestKernel = %s", got)
	}
}

func TestFindKernel(t *testing.T) {
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
	for _, tc := range []struct {
		path, want string
	}{
		{kernel("6.1.0-56-amd64", builtin), ""},
		{kernel("custom", ""), ""}, // no config: a warning, and the checks decide
		{kernel("modular", "CONFIG_VMGENID=m\n"), "is a module"},
		{kernel("without", "# CONFIG_VMGENID is not set\n"), "no vmgenid driver"},
		{filepath.Join(dir, "vmlinuz-absent"), "no such file"},
	} {
		got, err := findKernel(tc.path)
		switch {
		case tc.want == "" && (err != nil || got != tc.path):
			t.Errorf("findKernel(%s) = %q, %v", tc.path, got, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("findKernel(%s) error = %v, want %q", tc.path, err, tc.want)
		}
	}
}
