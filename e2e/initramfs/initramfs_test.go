package initramfs

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
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
	script, err := initScript(progs)
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
		if _, err := initScript(tc.progs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("initScript(%+v) = %v, want %q", tc.progs, err, tc.want)
		}
	}
}

// The start function of /init, run by the host's sh, must tag every line,
// keep arguments with spaces and quotes whole, capture stderr and report the
// exit status.
func TestInitScriptStartFunction(t *testing.T) {
	script, err := initScript([]Program{
		{Name: "two", Argv: []string{"sh", "-c", `printf '%s\n' "$1"; echo oops >&2; exit 3`, "sh", "it's a 'test'"}},
	})
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
