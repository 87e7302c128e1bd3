package vehicle

import (
	"strings"
	"testing"
)

// FuzzNormalizeVIN checks that any input either is refused with
// ErrInvalidVIN or comes back as 17 upper-case characters of the VIN
// alphabet that normalize to themselves.
func FuzzNormalizeVIN(f *testing.F) {
	for _, s := range []string{"WVWZZZ1JZXW000001", " wvwzzz1jzxw000001 ", "1HGCM82633A004352", "WVWZZZ1JZXW00000I", "", "ÀVWZZZ1JZXW000001", "WVWZZZ1JZXW0000011"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		vin, err := NormalizeVIN(raw)
		if err != nil {
			if err != ErrInvalidVIN {
				t.Fatalf("NormalizeVIN(%q) = error %v, want ErrInvalidVIN", raw, err)
			}
			return
		}
		if len(vin) != 17 || strings.ContainsAny(vin, "IOQ") {
			t.Fatalf("NormalizeVIN(%q) = %q: not 17 characters of the VIN alphabet", raw, vin)
		}
		for _, r := range vin {
			if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z') {
				t.Fatalf("NormalizeVIN(%q) = %q: holds %q", raw, vin, r)
			}
		}
		if again, err := NormalizeVIN(vin); err != nil || again != vin {
			t.Fatalf("NormalizeVIN(%q) = %q, %v: a normalized VIN must normalize to itself", vin, again, err)
		}
	})
}
