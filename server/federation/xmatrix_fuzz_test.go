package federation_test

import (
	"strings"
	"testing"

	"hearth/server/federation"
)

// FuzzParseXMatrix: the X-Matrix Authorization header is the first thing
// another server controls. Whatever parses has the required parameters,
// and written back as SignRequest writes headers (quoted, escaped) it
// parses to the same values. Seeds run in every go test; `make fuzz`
// fuzzes it.
func FuzzParseXMatrix(f *testing.F) {
	for _, h := range []string{
		`X-Matrix origin="origin.test",destination="dest.test",key="ed25519:k1",sig="c2ln"`,
		`X-Matrix origin=origin.test,destination=dest.test,key=ed25519:k1,sig=c2ln`,
		`X-Matrix   SIG="c2ln" , Key=ed25519:k1,  Destination="dest.test",ORIGIN="origin.test"`,
		`X-Matrix origin="origin\.test",destination="dest.test",key="ed25519:k1",sig="c\2ln"`,
		`X-Matrix origin="origin.test",destination="dest.test",future="x, y",key="ed25519:k1",sig="c2ln"`,
		`X-Matrix ,origin="origin.test",,destination="dest.test",key="ed25519:k1",sig="c2ln",`,
		`X-Matrix origin="[::1]:8448",key="ed25519:k1",sig="ab+/cd=="`,
		`X-Matrix origin=origin.test,key=ed25519:k1,sig=ab+/cd==`,
		`x-matrix origin="a",origin="b",key="ed25519:k",sig="s"`,
		`X-Matrix origin="unterminated`,
		`Bearer abc`,
	} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		x, err := federation.ParseXMatrix(h)
		if err != nil {
			return
		}
		if x.Origin == "" || x.KeyID == "" || x.Sig == "" || !strings.Contains(x.KeyID, ":") {
			t.Fatalf("accepted %q without what it needs: %+v", h, x)
		}
		for _, v := range []string{x.Origin, x.Destination, x.KeyID, x.Sig} {
			for _, c := range []byte(v) {
				if c < 0x20 || c == 0x7f {
					return // not writable as a quoted string
				}
			}
		}
		quote := func(v string) string {
			return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
		}
		out := `X-Matrix origin=` + quote(x.Origin) + `,key=` + quote(x.KeyID) + `,sig=` + quote(x.Sig)
		if x.Destination != "" {
			out += `,destination=` + quote(x.Destination)
		}
		y, err := federation.ParseXMatrix(out)
		if err != nil || y != x {
			t.Fatalf("%q parsed as %+v; written back as %q it parses as %+v (%v)", h, x, out, y, err)
		}
	})
}
