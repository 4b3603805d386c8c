package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const installHint = "run e2e/install-deps.sh"

// tools are the host programs the driver needs, checked before anything
// starts so that a missing one is reported as such, never as a failed or
// skipped test.
type tools struct {
	qemu, busybox, goTool string
}

func findTools(qemu string) (tools, error) {
	var t tools
	var missing []string
	for _, x := range []struct {
		dst        *string
		name, hint string
	}{
		{&t.qemu, qemu, installHint + " (apt-get install qemu-system-x86)"},
		{&t.busybox, "busybox", installHint + " (apt-get install busybox-static)"},
		{&t.goTool, "go", "the Go toolchain builds the guest programs"},
	} {
		p, err := exec.LookPath(x.name)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s: %s", x.name, x.hint))
			continue
		}
		*x.dst = p
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("not found in PATH: %s", strings.Join(missing, "; "))
	}
	return t, nil
}

// checkApplets checks that busybox has the applets the guest's /init runs
// besides the usual ones: ip for the network, insmod and the decompressor
// of each module's compression.
func checkApplets(busybox string, modules []string) error {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %v", busybox, err)
	}
	have := map[string]bool{}
	for _, a := range strings.Fields(string(out)) {
		have[a] = true
	}
	var missing []string
	need := []string{"ip", "insmod"}
	for _, m := range modules {
		switch {
		case strings.HasSuffix(m, ".xz"):
			need = append(need, "xzcat")
		case strings.HasSuffix(m, ".gz"):
			need = append(need, "zcat")
		}
	}
	for _, a := range need {
		if !have[a] && !slices.Contains(missing, a) {
			missing = append(missing, a)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s has no applet %s, which the guest needs for its network: use Debian's busybox-static (%s)", busybox, strings.Join(missing, ", "), installHint)
	}
	return nil
}

// findKernels returns the kernels to boot, oldest first: paths when given
// (each must be usable), else every /boot/vmlinuz-* whose config beside it
// builds the vmgenid driver in. None is an error naming what to install.
func findKernels(paths []string) ([]string, error) {
	if len(paths) == 0 {
		found, err := filepath.Glob("/boot/vmlinuz-*")
		if err != nil {
			return nil, err
		}
		for _, p := range found {
			cfg, err := os.ReadFile(kernelConfig(p))
			if err == nil {
				err = checkVMGenID(string(cfg))
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "clonetest: not using %s: %v\n", p, err)
				continue
			}
			paths = append(paths, p)
		}
		if len(paths) == 0 {
			return nil, fmt.Errorf("no guest kernel with the vmgenid driver built in /boot: %s (apt-get install linux-image-amd64) or pass -kernel", installHint)
		}
	}
	for _, p := range paths {
		if err := checkKernel(p); err != nil {
			return nil, err
		}
	}
	paths = slices.Clone(paths)
	slices.SortStableFunc(paths, func(a, b string) int { return compareVersions(kernelVersion(a), kernelVersion(b)) })
	return paths, nil
}

// checkKernel checks that the kernel is readable (Debian installs them mode
// 0600) and, from the config file beside it, that the vmgenid driver is
// built in.
func checkKernel(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("guest kernel %s is not readable (Debian installs kernels mode 0600): run as root or pass a readable copy with -kernel", path)
		}
		return fmt.Errorf("guest kernel: %w", err)
	}
	f.Close()
	cfg := kernelConfig(path)
	data, err := os.ReadFile(cfg)
	if errors.Is(err, fs.ErrNotExist) {
		// A hand-built kernel may come without one; the fork-record check
		// still fails the run if the driver is missing.
		fmt.Fprintf(os.Stderr, "clonetest: warning: no %s: cannot tell whether the kernel has the vmgenid driver\n", cfg)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading kernel config: %w", err)
	}
	if err := checkVMGenID(string(data)); err != nil {
		return fmt.Errorf("guest kernel %s: %w", path, err)
	}
	return nil
}

// kernelConfig returns the path of the config file Debian installs beside
// a kernel.
func kernelConfig(path string) string {
	return filepath.Join(filepath.Dir(path), "config-"+kernelVersion(path))
}

// checkVMGenID checks a kernel config for a built-in vmgenid driver. The
// initramfs carries no modules: Debian's 6.1 and 6.12 kernels build the
// driver in.
func checkVMGenID(config string) error {
	sc := bufio.NewScanner(strings.NewReader(config))
	for sc.Scan() {
		switch sc.Text() {
		case "CONFIG_VMGENID=y":
			return nil
		case "CONFIG_VMGENID=m":
			return errors.New("the vmgenid driver is a module (CONFIG_VMGENID=m); the test guest loads no modules: use a kernel with CONFIG_VMGENID=y, such as Debian's linux-image-amd64")
		}
	}
	return errors.New("no vmgenid driver (CONFIG_VMGENID unset): use a kernel with CONFIG_VMGENID=y, such as Debian's linux-image-amd64")
}

// kernelVersion returns the version part of a vmlinuz-VERSION file name.
func kernelVersion(path string) string {
	return strings.TrimPrefix(filepath.Base(path), "vmlinuz-")
}

// compareVersions compares a and b chunk by chunk, a chunk being a run of
// digits or of other characters; digit runs compare as numbers.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		ca, ra := chunk(a)
		cb, rb := chunk(b)
		na, errA := strconv.ParseUint(ca, 10, 64)
		nb, errB := strconv.ParseUint(cb, 10, 64)
		switch {
		case errA == nil && errB == nil && na != nb:
			if na < nb {
				return -1
			}
			return 1
		case (errA != nil || errB != nil) && ca != cb:
			return strings.Compare(ca, cb)
		}
		a, b = ra, rb
	}
	return strings.Compare(a, b)
}

func chunk(s string) (string, string) {
	digit := s[0] >= '0' && s[0] <= '9'
	i := 1
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') == digit {
		i++
	}
	return s[:i], s[i:]
}
