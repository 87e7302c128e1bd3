package enrollment

import (
	"strings"
	"testing"
)

// FuzzNormalizePhone checks that any input either is refused with
// ErrInvalidPhone or comes back as 6 to 15 digits, with at most a leading
// "+", that normalize to themselves.
func FuzzNormalizePhone(f *testing.F) {
	for _, s := range []string{"0612345678", "+33 6 12 34 56 78", "06.12.34.56.78", "(555) 123-4567", "+", "12345", "1234567890123456", "０６１２３４５６７８", "+-+612345678"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		phone, err := NormalizePhone(raw)
		if err != nil {
			if err != ErrInvalidPhone {
				t.Fatalf("NormalizePhone(%q) = error %v, want ErrInvalidPhone", raw, err)
			}
			return
		}
		digits := strings.TrimPrefix(phone, "+")
		if len(digits) < 6 || len(digits) > 15 {
			t.Fatalf("NormalizePhone(%q) = %q: %d digits", raw, phone, len(digits))
		}
		for _, r := range digits {
			if r < '0' || r > '9' {
				t.Fatalf("NormalizePhone(%q) = %q: holds %q", raw, phone, r)
			}
		}
		if again, err := NormalizePhone(phone); err != nil || again != phone {
			t.Fatalf("NormalizePhone(%q) = %q, %v: a normalized number must normalize to itself", phone, again, err)
		}
	})
}
