package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// moduleDir writes a module directory with the given modules.dep and
// modules.builtin.
func moduleDir(t *testing.T, dep, builtin string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string]string{"modules.dep": dep, "modules.builtin": builtin} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// As in Debian's 6.1 (modules.dep lines trimmed to what the network needs).
const dep61 = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
`

// As in Debian's 6.12: the transport built in, xz-compressed modules.
const (
	dep612 = `kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
`
	builtin612 = `kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko
kernel/drivers/virtio/virtio_pci.ko
`
)

func TestResolveModules(t *testing.T) {
	rel := func(dir string, paths []string) []string {
		var out []string
		for _, p := range paths {
			r, err := filepath.Rel(dir, p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		return out
	}
	// Every module comes after what it depends on, each once.
	dir := moduleDir(t, dep61, "kernel/fs/ext4/ext4.ko\n")
	got, err := resolveModules(dir, netDrivers...)
	if err != nil {
		t.Fatal(err)
	}
	deps, err := readModulesDep(filepath.Join(dir, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	order := rel(dir, got)
	if len(order) != 8 || order[len(order)-1] != "kernel/drivers/net/virtio_net.ko" {
		t.Errorf("order = %v", order)
	}
	for i, m := range order {
		for _, d := range deps[m] {
			if j := slices.Index(order, d); j < 0 || j > i {
				t.Errorf("%s at %d, its dependency %s at %d", m, i, d, j)
			}
		}
	}
	if slices.Contains(order, "kernel/drivers/char/hw_random/virtio-rng.ko") {
		t.Errorf("order %v has a module nobody asked for", order)
	}

	dir = moduleDir(t, dep612, builtin612)
	got, err = resolveModules(dir, netDrivers...)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"kernel/net/core/failover.ko.xz", "kernel/drivers/net/net_failover.ko.xz", "kernel/drivers/net/virtio_net.ko.xz"}; !slices.Equal(rel(dir, got), want) {
		t.Errorf("order = %v, want %v", rel(dir, got), want)
	}

	// Everything built in: nothing to load.
	dir = moduleDir(t, "", builtin612+"kernel/drivers/net/virtio_net.ko\n")
	if got, err = resolveModules(dir, netDrivers...); err != nil || len(got) != 0 {
		t.Errorf("all built in: %v, %v", got, err)
	}
	// '-' and '_' name the same module.
	dir = moduleDir(t, dep61, "")
	if got, err = resolveModules(dir, "virtio-rng"); err != nil || len(got) != 3 || !strings.HasSuffix(got[2], "virtio-rng.ko") {
		t.Errorf("virtio-rng: %v, %v", got, err)
	}
}

func TestResolveModulesFails(t *testing.T) {
	for _, tc := range []struct {
		name, dep, builtin, want string
	}{
		{"no driver", "kernel/net/core/failover.ko:\n", "", "kernel module virtio_pci is neither built in"},
		{"a dependency without a line", "kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko\n", builtin612, "depends on kernel/net/core/failover.ko, which has no line of its own"},
		{"a cycle", "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\nkernel/virtio_net.ko: kernel/a.ko\n", builtin612, "a dependency cycle: virtio_net -> a -> b -> a"},
		{"a garbled line", "kernel/drivers/net/virtio_net.ko\n", builtin612, `want "module: dependencies"`},
		{"zstd", "kernel/drivers/net/virtio_net.ko.zst:\n", builtin612, "compressed with zstd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resolveModules(moduleDir(t, tc.dep, tc.builtin), netDrivers...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := resolveModules(filepath.Join(t.TempDir(), "none"), netDrivers...); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no module directory: %v", err)
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/net/virtio_net.ko.xz":         "virtio_net",
		"kernel/drivers/char/hw_random/virtio-rng.ko": "virtio_rng",
		"failover.ko.gz": "failover",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := moduleNames(nil); got != "none (built in)" {
		t.Errorf("moduleNames(nil) = %q", got)
	}
}
