package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// netDrivers are the kernel modules of the guest's network interface: the
// virtio PCI transport and the virtio-net driver. Debian's 6.1 builds both
// as modules, its 6.12 the transport in and the driver as a module.
var netDrivers = []string{"virtio_pci", "virtio_net"}

// modulesRoot is where Debian installs each kernel's modules, in a
// directory named after the kernel's version.
const modulesRoot = "/lib/modules"

// netModules returns the host paths of the modules the guest must load, in
// order, for its network interface on the kernel of the given version:
// the modules of netDrivers that the kernel does not build in, each after
// its dependencies (modules.dep).
func netModules(version string) ([]string, error) {
	dir := filepath.Join(modulesRoot, version)
	mods, err := resolveModules(dir, netDrivers...)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: the guest's network needs the kernel's %s modules: install the kernel's package (linux-image-*), or use a kernel that builds them in", err, strings.Join(netDrivers, " and "))
	}
	return mods, err
}

// resolveModules returns the paths of the modules called names, with their
// dependencies, in an order insmod can load them: every module after the
// modules it depends on. dir is a kernel's module directory: modules.dep
// names each module's file (relative to dir) and its dependencies,
// modules.builtin the modules built into the kernel, which need no
// loading.
func resolveModules(dir string, names ...string) ([]string, error) {
	builtin, err := readModuleList(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return nil, err
	}
	deps, err := readModulesDep(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	files := map[string]string{} // module name -> file, relative to dir
	for f := range deps {
		files[moduleName(f)] = f
	}
	var order []string
	state := map[string]int{} // 1: loading its dependencies, 2: in order
	var visit func(file string, chain []string) error
	visit = func(file string, chain []string) error {
		switch state[file] {
		case 1:
			return fmt.Errorf("%s: a dependency cycle: %s", filepath.Join(dir, "modules.dep"), strings.Join(append(chain, moduleName(file)), " -> "))
		case 2:
			return nil
		}
		state[file] = 1
		for _, d := range deps[file] {
			if _, ok := deps[d]; !ok {
				return fmt.Errorf("%s: %s depends on %s, which has no line of its own", filepath.Join(dir, "modules.dep"), file, d)
			}
			if err := visit(d, append(chain, moduleName(file))); err != nil {
				return err
			}
		}
		state[file] = 2
		order = append(order, file)
		return nil
	}
	for _, n := range names {
		n = normalizeModuleName(n)
		if builtin[n] {
			continue
		}
		f, ok := files[n]
		if !ok {
			return nil, fmt.Errorf("kernel module %s is neither built in (%s) nor in %s", n, filepath.Join(dir, "modules.builtin"), filepath.Join(dir, "modules.dep"))
		}
		if err := visit(f, nil); err != nil {
			return nil, err
		}
	}
	paths := make([]string, len(order))
	for i, f := range order {
		if strings.HasSuffix(f, ".zst") {
			return nil, fmt.Errorf("kernel module %s is compressed with zstd, which the guest's busybox cannot decompress", filepath.Join(dir, f))
		}
		paths[i] = filepath.Join(dir, f)
	}
	return paths, nil
}

// readModulesDep reads a modules.dep: lines "FILE: DEP DEP ...", paths
// relative to the module directory.
func readModulesDep(file string) (map[string][]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		if !ok || mod == "" {
			return nil, fmt.Errorf("%s:%d: want \"module: dependencies\", got %q", file, n, line)
		}
		deps[mod] = strings.Fields(rest)
	}
	return deps, sc.Err()
}

// readModuleList reads a list of module files, one a line, such as
// modules.builtin, into a set of module names.
func readModuleList(file string) (map[string]bool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			set[moduleName(l)] = true
		}
	}
	return set, nil
}

// moduleName returns the name of the module in a file such as
// kernel/drivers/net/virtio_net.ko.xz: virtio_net.
func moduleName(file string) string {
	base := path.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return normalizeModuleName(base)
}

// normalizeModuleName spells a module name the kernel's way: it treats '-'
// and '_' alike (virtio-rng.ko is module virtio_rng).
func normalizeModuleName(n string) string { return strings.ReplaceAll(n, "-", "_") }
