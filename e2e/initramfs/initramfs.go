// Package initramfs packs the end-to-end test guest: a cpio initramfs holding
// a static busybox, the guest's static binaries, kernel modules, other files
// and a generated /init that mounts the usual file systems, loads the
// modules, configures the network and starts the guest programs with their
// output on the console, each line tagged with the program's name.
package initramfs

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/snapsafe/snapsafe/e2e/console"
)

// Program is a guest program that /init starts in the background.
type Program struct {
	// Name tags the program's console lines: each line it prints, on stdout
	// or stderr, appears as "[Name] line" (see console.ValidTag). "init" is
	// reserved for /init's own lines.
	Name string
	// Argv is the command and its arguments. The command is looked up in the
	// guest's PATH (/bin holds the binaries of the Spec and busybox applets).
	Argv []string
}

// Spec says what goes into the initramfs.
type Spec struct {
	// Busybox is the host path of a statically linked busybox.
	Busybox string
	// Binaries are host paths of statically linked programs, installed as
	// /bin/<base name>.
	Binaries []string
	// Programs are started by /init in this order.
	Programs []Program
	// Modules are host paths of kernel modules (.ko, .ko.xz or .ko.gz),
	// installed as /lib/modules/<base name> and loaded by /init in this
	// order, dependencies first, before it configures the network.
	Modules []string
	// Files are more files, such as configuration; their parent
	// directories are created as needed.
	Files []File
	// Net, when set, is the static address /init gives a network interface
	// before it starts the programs.
	Net *Net
}

// File is a regular file of the initramfs, owned by root.
type File struct {
	Name string // path in the guest, without the leading slash
	Mode fs.FileMode
	Data []byte
}

// Net is a static IPv4 configuration of one interface.
type Net struct {
	// Interface is the kernel's name of the interface, such as eth0: the
	// initramfs has no udev to rename it.
	Interface string
	// Address is the interface's address with its prefix length, such as
	// 10.0.2.15/24.
	Address string
	// Gateway, when set, is the default route's next hop, such as 10.0.2.2.
	Gateway string
}

// ModuleDir is the guest directory that holds Spec.Modules.
const ModuleDir = "lib/modules"

var ifacePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,14}$`)

// check validates n and returns the address and gateway in canonical form.
func (n *Net) check() (addr netip.Prefix, gw netip.Addr, err error) {
	if !ifacePattern.MatchString(n.Interface) {
		return addr, gw, fmt.Errorf("initramfs: interface name %q: use a letter, then up to 14 letters, digits, '_', '.' and '-'", n.Interface)
	}
	if addr, err = netip.ParsePrefix(n.Address); err != nil || !addr.Addr().Is4() {
		return addr, gw, fmt.Errorf("initramfs: interface address %q: want an IPv4 address with its prefix length, such as 10.0.2.15/24", n.Address)
	}
	if n.Gateway != "" {
		if gw, err = netip.ParseAddr(n.Gateway); err != nil || !gw.Is4() {
			return addr, gw, fmt.Errorf("initramfs: gateway %q: want an IPv4 address, such as 10.0.2.2", n.Gateway)
		}
	}
	return addr, gw, nil
}

// InitName is the console tag of /init's own lines.
const InitName = "init"

// Write packs the initramfs described by s into w as an uncompressed newc
// cpio archive.
func Write(w io.Writer, s Spec) error {
	script, err := initScript(s)
	if err != nil {
		return err
	}
	busybox, err := readStatic(s.Busybox)
	if err != nil {
		return err
	}
	c := NewCPIOWriter(w)
	dirs := map[string]bool{}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp", "root"} {
		if err := c.Dir(d, 0o755); err != nil {
			return err
		}
		dirs[d] = true
	}
	// mkdirs writes the directories of name that are not written yet,
	// outermost first: the kernel creates no missing parents.
	mkdirs := func(name string) error {
		var missing []string
		for d := path.Dir(name); d != "." && !dirs[d]; d = path.Dir(d) {
			missing = append(missing, d)
		}
		for i := len(missing) - 1; i >= 0; i-- {
			if err := c.Dir(missing[i], 0o755); err != nil {
				return err
			}
			dirs[missing[i]] = true
		}
		return nil
	}
	// The kernel opens /dev/console for init's standard streams before /init
	// runs, which is before devtmpfs is mounted.
	if err := c.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := c.File("bin/busybox", 0o755, busybox); err != nil {
		return err
	}
	// The other applet links are made by /init; the interpreter of /init
	// itself must exist before.
	if err := c.Symlink("bin/sh", "busybox"); err != nil {
		return err
	}
	seen := map[string]string{"busybox": s.Busybox, "sh": s.Busybox}
	for _, b := range s.Binaries {
		base := filepath.Base(b)
		if prev, ok := seen[base]; ok {
			return fmt.Errorf("initramfs: %s and %s would both be /bin/%s", prev, b, base)
		}
		seen[base] = b
		data, err := readStatic(b)
		if err != nil {
			return err
		}
		if err := c.File("bin/"+base, 0o755, data); err != nil {
			return err
		}
	}
	// Every other entry: its name must be new and its parents directories.
	written := map[string]bool{"init": true, "dev/console": true}
	for base := range seen {
		written["bin/"+base] = true
	}
	extra := make([]File, 0, len(s.Modules)+len(s.Files))
	for _, m := range s.Modules {
		data, err := os.ReadFile(m)
		if err != nil {
			return fmt.Errorf("initramfs: kernel module: %w", err)
		}
		extra = append(extra, File{Name: ModuleDir + "/" + filepath.Base(m), Mode: 0o644, Data: data})
	}
	for _, f := range append(extra, s.Files...) {
		name := path.Clean(f.Name)
		if f.Name == "" || path.IsAbs(name) || name == "." || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("initramfs: file name %q: give a relative path inside the initramfs", f.Name)
		}
		if written[name] || dirs[name] {
			return fmt.Errorf("initramfs: %s would be in the initramfs twice", name)
		}
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if written[d] {
				return fmt.Errorf("initramfs: %s: %s is a file, not a directory", name, d)
			}
		}
		written[name] = true
		if err := mkdirs(name); err != nil {
			return err
		}
		if err := c.File(name, f.Mode, f.Data); err != nil {
			return err
		}
	}
	if err := c.File("init", 0o755, []byte(script)); err != nil {
		return err
	}
	return c.Close()
}

// readStatic reads an executable and checks that it is statically linked:
// the guest has no dynamic loader and no libraries.
func readStatic(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("initramfs: %s is not an ELF executable: %w", path, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("initramfs: %s is dynamically linked; the guest needs static binaries (busybox-static, CGO_ENABLED=0)", path)
		}
	}
	return data, nil
}

// initScript generates /init. It runs as PID 1 under busybox sh.
func initScript(s Spec) (string, error) {
	progs := s.Programs
	var b strings.Builder
	b.WriteString(`#!/bin/sh
# /init of the snapsafe end-to-end guest, generated by e2e/initramfs.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
exec </dev/null >/dev/console 2>&1
# start NAME CMD [ARG...] runs CMD in the background and copies every line it
# prints, on stdout or stderr, to the console as "[NAME] line". The shell's
# echo writes each line with one write, so lines of programs that print at
# the same time stay whole; the last line says how the program ended.
start() {
	name=$1
	shift
	{ "$@" 2>&1; echo "exited with status $?"; } | while IFS= read -r line; do echo "[$name] $line"; done &
}
`)
	if len(s.Modules) > 0 {
		// busybox insmod takes an uncompressed module; Debian compresses
		// its modules with xz since 6.x.
		fmt.Fprintf(&b, `# load MODULE loads a kernel module from /%[1]s, decompressing it first
# if need be; a failure is reported and the boot goes on.
load() {
	case $1 in
	*.xz) xzcat "/%[1]s/$1" >/tmp/module.ko && insmod /tmp/module.ko ;;
	*.gz) zcat "/%[1]s/$1" >/tmp/module.ko && insmod /tmp/module.ko ;;
	*) insmod "/%[1]s/$1" ;;
	esac || echo "[%[2]s] insmod $1 failed"
	rm -f /tmp/module.ko
}
`, ModuleDir, InitName)
		var names []string
		for _, m := range s.Modules {
			base := filepath.Base(m)
			if !strings.Contains(base, ".ko") {
				return "", fmt.Errorf("initramfs: kernel module %s: want a .ko, .ko.xz or .ko.gz file", m)
			}
			b.WriteString("load " + shellQuote(base) + "\n")
			names = append(names, strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(base, ".xz"), ".gz"), ".ko"))
		}
		fmt.Fprintf(&b, "echo %s\n", shellQuote(fmt.Sprintf("[%s] loaded %d modules: %s", InitName, len(names), strings.Join(names, " "))))
	}
	if s.Net != nil {
		addr, gw, err := s.Net.check()
		if err != nil {
			return "", err
		}
		iface := shellQuote(s.Net.Interface)
		// The driver registers the interface as it probes the device, which
		// insmod waits for; the loop covers a driver that probes later.
		fmt.Fprintf(&b, `# The network: a static address, no DHCP client.
ip link set lo up
i=0
while [ ! -e /sys/class/net/%[1]s ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
`, s.Net.Interface)
		cmds := []string{"ip link set " + iface + " up", "ip addr add " + addr.String() + " dev " + iface}
		what := fmt.Sprintf("%s %s", s.Net.Interface, addr)
		if gw.IsValid() {
			cmds = append(cmds, "ip route add default via "+gw.String())
			what += " via " + gw.String()
		}
		fmt.Fprintf(&b, "if %s; then\n\techo %s\nelse\n\techo %s\nfi\n", strings.Join(cmds, " && "),
			shellQuote(fmt.Sprintf("[%s] network: %s", InitName, what)),
			shellQuote(fmt.Sprintf("[%s] network: could not configure %s", InitName, what)))
	}
	fmt.Fprintf(&b, "echo %s\n", shellQuote(fmt.Sprintf("[%s] starting %d programs", InitName, len(progs))))
	names := map[string]bool{InitName: true}
	for _, p := range progs {
		if !console.ValidTag(p.Name) {
			return "", fmt.Errorf("initramfs: program name %q: use a letter, then letters, digits, '_', '.' and '-'", p.Name)
		}
		if names[p.Name] {
			return "", fmt.Errorf("initramfs: program name %q used twice or reserved", p.Name)
		}
		names[p.Name] = true
		if len(p.Argv) == 0 {
			return "", fmt.Errorf("initramfs: program %q has no command", p.Name)
		}
		b.WriteString("start " + shellQuote(p.Name))
		for _, a := range p.Argv {
			b.WriteString(" " + shellQuote(a))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "echo %s\n", shellQuote(fmt.Sprintf("[%s] started", InitName)))
	b.WriteString("# PID 1 must never exit: the kernel panics when it does.\nwhile :; do sleep 3600; done\n")
	return b.String(), nil
}

// shellQuote quotes s as one word for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
