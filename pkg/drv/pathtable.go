package drv

import "hash/maphash"

// pathTable numbers derivation paths by a 96-bit hash of each under random
// seeds: open addressing with linear probing over 16-byte slots, so that a
// lookup touches one cache line. Two paths that collide (a chance of about
// n²/2⁹⁷) cannot be chosen by whoever wrote the graph: the seeds are new
// per table.
type pathTable struct {
	slots []pathSlot
	n     int
	seeds [2]maphash.Seed
}

type pathSlot struct {
	h0 uint64 // 0: empty
	id int32
	h1 uint32
}

type pathKey struct {
	h0 uint64
	h1 uint32
}

func newPathTable(hint int) pathTable {
	size := 1 << 10
	for size < hint+hint/2 {
		size <<= 1
	}
	return pathTable{slots: make([]pathSlot, size), seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
}

func (t *pathTable) keyBytes(p []byte) pathKey {
	return mkKey(maphash.Bytes(t.seeds[0], p), maphash.Bytes(t.seeds[1], p))
}

func (t *pathTable) keyString(p string) pathKey {
	return mkKey(maphash.String(t.seeds[0], p), maphash.String(t.seeds[1], p))
}

func mkKey(h0, h1 uint64) pathKey {
	if h0 == 0 {
		h0 = 1
	}
	return pathKey{h0: h0, h1: uint32(h1)}
}

// find returns k's number, if the table holds k.
func (t *pathTable) find(k pathKey) (int32, bool) {
	mask := uint64(len(t.slots) - 1)
	for i := k.h0 & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.h0 == k.h0 && s.h1 == k.h1 {
			return s.id, true
		}
		if s.h0 == 0 {
			return 0, false
		}
	}
}

// insert adds k (not in the table) as id, growing the table at half full.
func (t *pathTable) insert(k pathKey, id int32) {
	if 2*(t.n+1) > len(t.slots) {
		old := t.slots
		t.slots = make([]pathSlot, 2*len(old))
		for _, s := range old {
			if s.h0 != 0 {
				t.place(s)
			}
		}
	}
	t.place(pathSlot{h0: k.h0, id: id, h1: k.h1})
	t.n++
}

func (t *pathTable) place(s pathSlot) {
	mask := uint64(len(t.slots) - 1)
	i := s.h0 & mask
	for t.slots[i].h0 != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = s
}

// touch reads the first slot of each key, so that the lookups after it
// find them in cache: the reads do not depend on one another, so the
// processor overlaps their cache misses, which one lookup after another
// (each branching on the last) would take in turn.
func (t *pathTable) touch(keys []pathKey) uint64 {
	mask := uint64(len(t.slots) - 1)
	var sum uint64
	for _, k := range keys {
		sum += t.slots[k.h0&mask].h0
	}
	return sum
}
