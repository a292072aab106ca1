package timeline

import (
	"fmt"
	"hash/maphash"
	"testing"
)

// TestTxnFilterAnswers: every ID added is "maybe" stored, few IDs never
// added are, and a filter past its size stops answering and asks for a
// bigger one.
func TestTxnFilterAnswers(t *testing.T) {
	f := &txnFilter{bits: make([]uint64, txnFilterBits(0)/64), seed: maphash.MakeSeed(), loaded: true}
	const added = 20000
	for i := range added {
		f.add(fmt.Sprintf("@u:hs\x00DEV\x00send !r:hs\x00t%d", i))
	}
	for i := range added {
		if !f.mayHave(fmt.Sprintf("@u:hs\x00DEV\x00send !r:hs\x00t%d", i)) {
			t.Fatalf("ID %d was added but is answered as never stored", i)
		}
	}
	maybe := 0
	for i := range 100000 {
		if f.mayHave(fmt.Sprintf("@u:hs\x00DEV\x00send !r:hs\x00new%d", i)) {
			maybe++
		}
	}
	// 52 bits an ID here: about 0.01% with four probes.
	if maybe > 100 {
		t.Fatalf("%d of 100,000 IDs never added are answered as maybe stored", maybe)
	}

	in := inflight{reload: make(chan struct{}, 1), filter: &txnFilter{bits: make([]uint64, 1), seed: maphash.MakeSeed(), loaded: true}}
	for i := range 64 / txnFilterReload {
		in.dropTxn(fmt.Sprintf("k%d", i), nil)
	}
	if !in.filter.loaded {
		t.Fatal("the filter stopped answering before it was full")
	}
	in.dropTxn("one more", nil)
	if in.filter.loaded {
		t.Fatal("a full filter still answers")
	}
	select {
	case <-in.reload:
	default:
		t.Fatal("a full filter did not ask to be built again")
	}
	if !in.filter.mayHave("never added") {
		t.Fatal("a filter being rebuilt answered that an ID was never stored")
	}
}

func TestTxnFilterBits(t *testing.T) {
	for _, c := range []struct{ ids, bits int }{{0, 1 << 20}, {1 << 16, 1 << 20}, {1<<16 + 1, 1 << 21}, {1 << 20, 1 << 24}} {
		if got := txnFilterBits(c.ids); got != c.bits {
			t.Errorf("txnFilterBits(%d) = %d, want %d", c.ids, got, c.bits)
		}
	}
}
