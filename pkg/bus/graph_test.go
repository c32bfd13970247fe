package bus

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestGraphChunksRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	drvs := make([]string, 5_000)
	for i := range drvs {
		drvs[i] = fmt.Sprintf("/nix/store/%032d-pkg%d.drv", i, i)
	}
	// Dense: 100 inputs each; one derivation with 50,000 inputs.
	var edges []int32
	for i := range drvs {
		for range 100 {
			edges = append(edges, int32(i), int32(rng.IntN(len(drvs))))
		}
	}
	for k := range 50_000 {
		edges = append(edges, 0, int32(k%len(drvs)))
	}
	chunks := GraphChunks("r1", drvs, edges, 0)
	require.Greater(t, len(chunks), 10)
	for i, c := range chunks {
		require.EqualValues(t, i, c.Index)
		require.Equal(t, "r1", c.RunId)
		b, err := proto.Marshal(c)
		require.NoError(t, err)
		require.Less(t, len(b), MaxGraphChunkBytes+1024, "chunk %d", i)
	}
	again := GraphChunks("r1", drvs, edges, 0)
	require.Len(t, again, len(chunks))
	for i := range chunks {
		require.True(t, proto.Equal(chunks[i], again[i]), "the same graph gives the same chunks")
	}

	// Any order, with repeats.
	shuffled := append([]*nixbuspb.GraphChunk{chunks[3]}, chunks...)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	gd, ge := AssembleGraph(shuffled)
	require.Equal(t, drvs, gd)
	require.True(t, slices.Equal(sortedPairs(edges), sortedPairs(ge)))
}

func sortedPairs(e []int32) []int64 {
	out := make([]int64, 0, len(e)/2)
	for k := 0; k+1 < len(e); k += 2 {
		out = append(out, int64(e[k])<<32|int64(e[k+1]))
	}
	slices.Sort(out)
	return out
}

func TestGraphChunksSmall(t *testing.T) {
	require.Nil(t, GraphChunks("r", nil, nil, 0))
	c := GraphChunks("r", []string{"a", "b"}, []int32{0, 1}, 0)
	require.Len(t, c, 1)
	d, e := AssembleGraph(c)
	require.Equal(t, []string{"a", "b"}, d)
	require.Equal(t, []int32{0, 1}, e)
	// Tiny chunks: one path or edge each.
	c = GraphChunks("r", []string{"a", "b"}, []int32{0, 1, 1, 0}, 1)
	require.Len(t, c, 4)
	d, e = AssembleGraph(c)
	require.Equal(t, []string{"a", "b"}, d)
	require.Equal(t, []int32{0, 1, 1, 0}, e)
}

func TestAssembleGraphHostile(t *testing.T) {
	d, e := AssembleGraph([]*nixbuspb.GraphChunk{
		{Index: 0, FirstDrv: 0, DrvPaths: []string{"a"}, Edges: []int32{0, 1, 7}},
		{Index: 1, FirstDrv: 1 << 30, DrvPaths: []string{"far"}}, // beyond what the chunks carry
		{Index: 2, FirstDrv: 0, DrvPaths: []string{"clash"}},     // overlaps chunk 0
		{Index: 3, FirstDrv: -5, DrvPaths: []string{"negative"}}, // before 0
		{Index: 0, FirstDrv: 0, DrvPaths: []string{"repeat"}},    // a repeated index
	})
	require.Equal(t, []string{"a", "", "", ""}, d)
	require.Equal(t, []int32{0, 1}, e)
}
