package backend

import (
	"errors"
	"fmt"
	"testing"

	"github.com/snapsafe/snapsafe/acpi"
	"github.com/snapsafe/snapsafe/shm"
)

// TestSentinelsAreShared: one value per meaning, so errors.Is matches
// whichever layer refused.
func TestSentinelsAreShared(t *testing.T) {
	for _, tc := range []struct {
		name        string
		err, target error
	}{
		{"acpi.ErrNoDevice", acpi.ErrNoDevice, ErrNoDevice},
		{"acpi.ErrNotSupported", acpi.ErrNotSupported, ErrNotSupported},
		{"shm.ErrNotSupported", shm.ErrNotSupported, ErrNotSupported},
	} {
		if err := fmt.Errorf("wrapped: %w", tc.err); !errors.Is(err, tc.target) {
			t.Errorf("%s does not match backend's sentinel", tc.name)
		}
	}
}
