package initramfs

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeELF writes a minimal 64-bit x86 executable header with one program
// header: PT_INTERP when dynamic, PT_LOAD otherwise.
func writeELF(t *testing.T, path string, dynamic bool) {
	t.Helper()
	var b bytes.Buffer
	h := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 1, Shentsize: 64,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	p := elf.Prog64{Type: uint32(elf.PT_LOAD)}
	if dynamic {
		p.Type = uint32(elf.PT_INTERP)
	}
	binary.Write(&b, binary.LittleEndian, h)
	binary.Write(&b, binary.LittleEndian, p)
	if err := os.WriteFile(path, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	bb, client, dyn := filepath.Join(dir, "busybox"), filepath.Join(dir, "guestclient"), filepath.Join(dir, "dyn")
	writeELF(t, bb, false)
	writeELF(t, client, false)
	writeELF(t, dyn, true)
	progs := []Program{{Name: "client", Argv: []string{"guestclient", "-n", "1"}}}

	var buf bytes.Buffer
	if err := Write(&buf, Spec{Busybox: bb, Binaries: []string{client}, Programs: progs}); err != nil {
		t.Fatal(err)
	}
	entries, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]cpioEntry{}
	dirs := map[string]bool{"": true}
	for _, e := range entries {
		// The kernel does not create parent directories: they must come first.
		if parent := filepath.Dir(e.name); parent != "." && !dirs[parent] {
			t.Errorf("%s comes before its directory", e.name)
		}
		if e.mode&0o170000 == modeDir {
			dirs[e.name] = true
		}
		byName[e.name] = e
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "usr/bin"} {
		if !dirs[d] {
			t.Errorf("missing directory %s", d)
		}
	}
	if e := byName["dev/console"]; e.mode != modeCharDev|0o600 || e.rdevMajor != 5 || e.rdevMinor != 1 {
		t.Errorf("dev/console = %+v", e)
	}
	if e := byName["bin/sh"]; e.mode != modeSymlink|0o777 || e.data != "busybox" {
		t.Errorf("bin/sh = %+v", e)
	}
	for _, name := range []string{"bin/busybox", "bin/guestclient"} {
		if e := byName[name]; e.mode != modeRegular|0o755 || len(e.data) != 120 {
			t.Errorf("%s = mode %o, %d bytes", name, e.mode, len(e.data))
		}
	}
	script, err := initScript(Spec{Programs: progs})
	if err != nil {
		t.Fatal(err)
	}
	if e := byName["init"]; e.mode != modeRegular|0o755 || e.data != script {
		t.Errorf("init = mode %o, script %q", e.mode, e.data)
	}

	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Busybox: dyn}, "dynamically linked"},
		{Spec{Busybox: bb, Binaries: []string{dyn}}, "dynamically linked"},
		{Spec{Busybox: bb, Binaries: []string{filepath.Join(dir, "nonexistent")}}, "no such file"},
		{Spec{Busybox: bb, Binaries: []string{client, client}}, "both be /bin/guestclient"},
		{Spec{Busybox: bb, Binaries: []string{bb}}, "both be /bin/busybox"},
	} {
		err := Write(&bytes.Buffer{}, tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Write(%+v) = %v, want %q", tc.spec, err, tc.want)
		}
	}
}

func TestInitScriptRejects(t *testing.T) {
	for _, tc := range []struct {
		progs []Program
		want  string
	}{
		{[]Program{{Name: "a b", Argv: []string{"x"}}}, "program name"},
		{[]Program{{Name: "", Argv: []string{"x"}}}, "program name"},
		{[]Program{{Name: "1a", Argv: []string{"x"}}}, "program name"},
		{[]Program{{Name: "init", Argv: []string{"x"}}}, "reserved"},
		{[]Program{{Name: "a", Argv: []string{"x"}}, {Name: "a", Argv: []string{"y"}}}, "used twice"},
		{[]Program{{Name: "a"}}, "no command"},
	} {
		if _, err := initScript(Spec{Programs: tc.progs}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("initScript(%+v) = %v, want %q", tc.progs, err, tc.want)
		}
	}
}

// The start function of /init, run by the host's sh, must tag every line,
// keep arguments with spaces and quotes whole, capture stderr and report the
// exit status.
func TestInitScriptStartFunction(t *testing.T) {
	script, err := initScript(Spec{Programs: []Program{
		{Name: "two", Argv: []string{"sh", "-c", `printf '%s\n' "$1"; echo oops >&2; exit 3`, "sh", "it's a 'test'"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Keep the function and the start lines; the mounts and the endless loop
	// belong to PID 1 in the guest.
	var keep []string
	in := false
	for _, l := range strings.Split(script, "\n") {
		switch {
		case strings.HasPrefix(l, "start() {"):
			in = true
		case strings.HasPrefix(l, "start ") || strings.HasPrefix(l, "echo "):
			keep = append(keep, l)
		}
		if in {
			keep = append(keep, l)
			in = l != "}"
		}
	}
	keep = append(keep, "wait")
	out, err := exec.Command("sh", "-c", strings.Join(keep, "\n")).CombinedOutput()
	if err != nil {
		t.Fatalf("sh: %v\n%s", err, out)
	}
	// The program runs concurrently with the rest of the script, so only the
	// order of each writer's own lines is fixed.
	var two, initLines []string
	for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "[two] "):
			two = append(two, l)
		case strings.HasPrefix(l, "[init] "):
			initLines = append(initLines, l)
		default:
			t.Errorf("untagged line %q", l)
		}
	}
	if got, want := strings.Join(two, "\n"), "[two] it's a 'test'\n[two] oops\n[two] exited with status 3"; got != want {
		t.Errorf("program lines:\n%s\nwant:\n%s", got, want)
	}
	if got, want := strings.Join(initLines, "\n"), "[init] starting 1 programs\n[init] started"; got != want {
		t.Errorf("init lines:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteModulesFilesNet(t *testing.T) {
	dir := t.TempDir()
	bb := filepath.Join(dir, "busybox")
	writeELF(t, bb, false)
	modDir := filepath.Join(dir, "kernel", "drivers", "net")
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		t.Fatal(err)
	}
	fo, vn := filepath.Join(dir, "failover.ko"), filepath.Join(modDir, "virtio_net.ko.xz")
	for _, f := range []string{fo, vn} {
		if err := os.WriteFile(f, []byte("module "+filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	spec := Spec{
		Busybox: bb,
		Modules: []string{fo, vn},
		Files:   []File{{Name: "etc/snapsafe/host-token", Mode: 0o600, Data: []byte("secret\n")}},
		Net:     &Net{Interface: "eth0", Address: "10.0.2.15/24", Gateway: "10.0.2.2"},
	}
	var buf bytes.Buffer
	if err := Write(&buf, spec); err != nil {
		t.Fatal(err)
	}
	entries, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]cpioEntry{}
	dirs := map[string]bool{}
	for _, e := range entries {
		if parent := filepath.Dir(e.name); parent != "." && !dirs[parent] {
			t.Errorf("%s comes before its directory", e.name)
		}
		if e.mode&0o170000 == modeDir {
			dirs[e.name] = true
		}
		byName[e.name] = e
	}
	for name, want := range map[string]cpioEntry{
		"lib/modules/failover.ko":      {mode: modeRegular | 0o644, data: "module failover.ko"},
		"lib/modules/virtio_net.ko.xz": {mode: modeRegular | 0o644, data: "module virtio_net.ko.xz"},
		"etc/snapsafe/host-token":      {mode: modeRegular | 0o600, data: "secret\n"},
		"etc":                          {mode: modeDir | 0o755},
		"etc/snapsafe":                 {mode: modeDir | 0o755},
		"lib/modules":                  {mode: modeDir | 0o755},
	} {
		if e, ok := byName[name]; !ok || e.mode != want.mode || e.data != want.data {
			t.Errorf("%s = %+v (present %v), want mode %o data %q", name, e, ok, want.mode, want.data)
		}
	}
	script := byName["init"].data
	for _, want := range []string{
		"load 'failover.ko'\nload 'virtio_net.ko.xz'\n",
		"echo '[init] loaded 2 modules: failover virtio_net'",
		"ip link set lo up\n",
		"while [ ! -e /sys/class/net/eth0 ]",
		"if ip link set 'eth0' up && ip addr add 10.0.2.15/24 dev 'eth0' && ip route add default via 10.0.2.2; then\n\techo '[init] network: eth0 10.0.2.15/24 via 10.0.2.2'\nelse\n\techo '[init] network: could not configure eth0 10.0.2.15/24 via 10.0.2.2'\nfi\n",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("/init lacks %q:\n%s", want, script)
		}
	}
	// Modules and the network come before the programs.
	if strings.Index(script, "load 'failover.ko'") > strings.Index(script, "starting 0 programs") ||
		strings.Index(script, "ip link set lo up") > strings.Index(script, "starting 0 programs") {
		t.Errorf("/init starts the programs before the modules or the network:\n%s", script)
	}

	for _, tc := range []struct {
		edit func(s *Spec)
		want string
	}{
		{func(s *Spec) { s.Files = append(s.Files, File{Name: "etc/snapsafe/host-token"}) }, "etc/snapsafe/host-token would be in the initramfs twice"},
		{func(s *Spec) { s.Files = append(s.Files, File{Name: "bin/busybox"}) }, "bin/busybox would be in the initramfs twice"},
		{func(s *Spec) { s.Files = append(s.Files, File{Name: "init"}) }, "init would be in the initramfs twice"},
		{func(s *Spec) { s.Files = append(s.Files, File{Name: "tmp"}) }, "tmp would be in the initramfs twice"},
		{func(s *Spec) { s.Files = append(s.Files, File{Name: "etc/snapsafe/host-token/x"}) }, "etc/snapsafe/host-token is a file, not a directory"},
		{func(s *Spec) { s.Files = append(s.Files, File{Name: "/etc/passwd"}) }, "give a relative path"},
		{func(s *Spec) { s.Files = append(s.Files, File{Name: "../x"}) }, "give a relative path"},
		{func(s *Spec) { s.Files = append(s.Files, File{}) }, "give a relative path"},
		{func(s *Spec) { s.Modules = append(s.Modules, filepath.Join(dir, "nonexistent.ko")) }, "kernel module"},
		{func(s *Spec) { s.Modules = append(s.Modules, bb) }, "want a .ko, .ko.xz or .ko.gz file"},
		{func(s *Spec) { s.Net = &Net{Interface: "eth 0", Address: "10.0.2.15/24"} }, "interface name"},
		{func(s *Spec) { s.Net = &Net{Interface: "eth0", Address: "10.0.2.15"} }, "interface address"},
		{func(s *Spec) { s.Net = &Net{Interface: "eth0", Address: "fe80::1/64"} }, "interface address"},
		{func(s *Spec) { s.Net = &Net{Interface: "eth0", Address: "10.0.2.15/24", Gateway: "gw"} }, "gateway"},
	} {
		s := spec
		s.Files = slices.Clone(spec.Files)
		s.Modules = slices.Clone(spec.Modules)
		tc.edit(&s)
		if err := Write(&bytes.Buffer{}, s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Write: %v, want %q", err, tc.want)
		}
	}
	// Without a gateway, no default route.
	s := spec
	s.Net = &Net{Interface: "eth1", Address: "192.168.7.2/30"}
	script, err = initScript(s)
	if err != nil || strings.Contains(script, "route") || !strings.Contains(script, "ip addr add 192.168.7.2/30 dev 'eth1'; then") {
		t.Errorf("without a gateway: %v\n%s", err, script)
	}
}

// The load function of /init, run by the host's sh with a stand-in insmod,
// must decompress what needs it and report a failure.
func TestInitScriptLoadFunction(t *testing.T) {
	tmp := t.TempDir()
	mods, bin := filepath.Join(tmp, "modules"), filepath.Join(tmp, "bin")
	for _, d := range []string{mods, bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// insmod prints the module it is given; it fails for bad.ko.
	insmod := "#!/bin/sh\ncase $1 in *bad.ko) exit 1 ;; esac\nprintf 'insmod %s\\n' \"$(cat \"$1\")\"\n"
	if err := os.WriteFile(filepath.Join(bin, "insmod"), []byte(insmod), 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"plain.ko", "bad.ko"}
	if err := os.WriteFile(filepath.Join(mods, "plain.ko"), []byte("plain"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mods, "bad.ko"), []byte("bad"), 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("gzipped"))
	zw.Close()
	if err := os.WriteFile(filepath.Join(mods, "g.ko.gz"), gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	names = append(names, "g.ko.gz")
	want := "insmod plain\n[init] insmod bad.ko failed\ninsmod gzipped\n"
	if xz, err := exec.LookPath("xz"); err == nil {
		// The kernel's modules are compressed with --check=crc32.
		cmd := exec.Command(xz, "-c", "--check=crc32")
		cmd.Stdin = strings.NewReader("xzed")
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mods, "x.ko.xz"), out, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, "x.ko.xz")
		want += "insmod xzed\n"
	} else {
		t.Log("no xz: the .ko.xz case is not tried")
	}
	var paths []string
	for _, n := range names {
		paths = append(paths, filepath.Join(mods, n))
	}
	script, err := initScript(Spec{Modules: paths})
	if err != nil {
		t.Fatal(err)
	}
	// Keep the function and its calls, pointed at the test's directories.
	var keep []string
	in := false
	for _, l := range strings.Split(script, "\n") {
		if strings.HasPrefix(l, "load() {") {
			in = true
		}
		if in || strings.HasPrefix(l, "load ") {
			keep = append(keep, l)
		}
		if in && l == "}" {
			in = false
		}
	}
	sh := strings.Join(keep, "\n")
	sh = strings.ReplaceAll(sh, "/"+ModuleDir+"/", mods+"/")
	sh = strings.ReplaceAll(sh, "/tmp/module.ko", filepath.Join(tmp, "module.ko"))
	cmd := exec.Command("sh", "-c", sh)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sh: %v\n%s\n%s", err, out, sh)
	}
	if string(out) != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if _, err := os.Stat(filepath.Join(tmp, "module.ko")); !os.IsNotExist(err) {
		t.Errorf("the decompressed module is left behind: %v", err)
	}
}
