package csprng

import (
	"path/filepath"
	"testing"

	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/internal/testprovider"
	"github.com/snapsafe/snapsafe/internal/testuser"
)

// TestHostileProviderNotUsed: uid 65534 runs a provider in a directory it
// made under the name a victim would use. The generator must not attach to
// it (its wipe regions would be uid 65534's memfds, readable by uid 65534,
// and its generation uid 65534's to set): it falls back as it does without
// a provider.
func TestHostileProviderNotUsed(t *testing.T) {
	testdevice.RequireRoot(t, "to run a provider as uid 65534")
	tmp := testuser.SharedTmp(t)
	dir := filepath.Join(tmp, "snapsafe-0")
	testprovider.StartAs(t, testuser.Nobody, dir)
	t.Setenv("SNAPSAFE_DIR", dir)
	if src := attachProvider(""); src != nil {
		src.retire()
		t.Fatal("csprng attached to uid 65534's provider")
	}
	src := selectSource()
	defer src.retire()
	if src.mode == ModeProvider {
		t.Fatalf("selectSource chose a provider (uid 65534's): mode %v", src.mode)
	}
	t.Logf("fell back to %v", src.mode)
}
