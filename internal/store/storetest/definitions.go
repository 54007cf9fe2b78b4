package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

func testDefinitionIdentical(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := timeout(t)
	s := newStore(t)
	def := definition(t, "payment", 2)

	first, created, err := s.RegisterDefinition(ctx, def)
	require.NoError(t, err)
	require.True(t, created, "the first registration creates version 1")
	require.Equal(t, 1, first.Version)
	require.False(t, first.CreatedAt.IsZero(), "CreatedAt is set")
	require.Equal(t, def.Hash(), first.Hash(), "the returned definition has the registered content")

	again, created, err := s.RegisterDefinition(ctx, def)
	require.NoError(t, err)
	require.False(t, created, "identical content is a no-op")
	require.Equal(t, 1, again.Version)
	requireSameTime(t, first.CreatedAt, again.CreatedAt, "CreatedAt of the existing version")

	list, err := s.ListDefinitions(ctx, store.DefinitionFilter{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, 1, list[0].Version)
}

func testDefinitionChanged(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := timeout(t)
	s := newStore(t)
	v1 := definition(t, "payment", 2)
	v2 := definition(t, "payment", 3)
	v3 := v2
	v3.Steps = append([]saga.StepDefinition(nil), v2.Steps...)
	v3.Steps[0].Timeout = 5 * time.Second

	for i, def := range []saga.Definition{v1, v2, v3} {
		got, created, err := s.RegisterDefinition(ctx, def)
		require.NoError(t, err)
		require.True(t, created, "changed content creates a version")
		require.Equal(t, i+1, got.Version)
	}
	got, created, err := s.RegisterDefinition(ctx, v3)
	require.NoError(t, err)
	require.False(t, created, "registering the latest content again is a no-op")
	require.Equal(t, 3, got.Version)

	other, created, err := s.RegisterDefinition(ctx, definition(t, "refund", 2))
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, 1, other.Version, "versions count per name")
}

func testDefinitionGet(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := timeout(t)
	s := newStore(t)
	v1 := definition(t, "payment", 1)
	v2 := definition(t, "payment", 2)
	for _, def := range []saga.Definition{v1, v2} {
		_, _, err := s.RegisterDefinition(ctx, def)
		require.NoError(t, err)
	}

	latest, err := s.GetDefinition(ctx, "payment", 0)
	require.NoError(t, err)
	require.Equal(t, 2, latest.Version, "version 0 means the latest")
	require.Equal(t, v2.Hash(), latest.Hash(), "the latest has the content of version 2")
	require.False(t, latest.CreatedAt.IsZero())

	first, err := s.GetDefinition(ctx, "payment", 1)
	require.NoError(t, err)
	require.Equal(t, 1, first.Version)
	require.Equal(t, v1.Hash(), first.Hash(), "version 1 keeps its content")

	for _, tc := range []struct {
		name    string
		version int
	}{{"payment", 3}, {"nosuch", 0}, {"nosuch", 1}} {
		_, err := s.GetDefinition(ctx, tc.name, tc.version)
		require.ErrorIs(t, err, store.ErrNotFound, "GetDefinition(%q, %d)", tc.name, tc.version)
	}
}

func testDefinitionList(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := timeout(t)
	s := newStore(t)
	list, err := s.ListDefinitions(ctx, store.DefinitionFilter{})
	require.NoError(t, err)
	require.Empty(t, list, "an empty store lists nothing")

	want := map[string]saga.Definition{}
	for _, def := range []saga.Definition{
		definition(t, "alpha", 1), definition(t, "alpha", 2), definition(t, "alpha", 3),
		definition(t, "beta", 1),
		definition(t, "gamma", 2), definition(t, "gamma", 1),
	} {
		got, _, err := s.RegisterDefinition(ctx, def)
		require.NoError(t, err)
		want[def.Name] = got
	}
	list, err = s.ListDefinitions(ctx, store.DefinitionFilter{})
	require.NoError(t, err)
	require.Len(t, list, len(want), "one entry per name")
	for _, got := range list {
		w, ok := want[got.Name]
		require.True(t, ok, "unexpected definition %q", got.Name)
		require.Equal(t, w.Version, got.Version, "%s: the latest version", got.Name)
		require.Equal(t, w.Hash(), got.Hash(), "%s: the latest content", got.Name)
		delete(want, got.Name)
	}
}

// testDefinitionListPages lists five definitions in pages of two: each page continues after the
// previous page's last name, and together they list each name once, in order.
func testDefinitionListPages(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := timeout(t)
	s := newStore(t)
	names := []string{"a1", "a2", "b1", "c1", "c2"}
	for _, n := range names {
		_, _, err := s.RegisterDefinition(ctx, definition(t, n, 1))
		require.NoError(t, err)
	}
	var got []string
	after := ""
	for range len(names) {
		page, err := s.ListDefinitions(ctx, store.DefinitionFilter{AfterName: after, Limit: 2})
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), 2)
		if len(page) == 0 {
			break
		}
		for _, d := range page {
			got = append(got, d.Name)
		}
		after = page[len(page)-1].Name
	}
	require.Equal(t, names, got)
}

// testDefinitionConcurrentIdentical registers the same content from 8 goroutines at once: exactly
// one creates version 1, the others find it.
func testDefinitionConcurrentIdentical(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := timeout(t)
	s := newStore(t)
	def := definition(t, "payment", 3)
	const n = 8
	versions := make([]int, n)
	created := make([]bool, n)
	errs := make([]error, n)
	parallel(n, func(i int) {
		var got saga.Definition
		got, created[i], errs[i] = s.RegisterDefinition(ctx, def)
		versions[i] = got.Version
	})
	creators := 0
	for i := range n {
		require.NoError(t, errs[i], "goroutine %d", i)
		require.Equal(t, 1, versions[i], "goroutine %d", i)
		if created[i] {
			creators++
		}
	}
	require.Equal(t, 1, creators, "exactly one registration creates the version")
}

// testDefinitionConcurrentChanged registers 4 different contents of one name, each from 2
// goroutines, all at once. Registrations serialize per name: each either creates the next version
// or finds its content is already the latest. So the versions run from 1 without gaps, no two
// consecutive versions hold the same content, every registration's result holds its own content,
// and every content was created at least once.
func testDefinitionConcurrentChanged(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := timeout(t)
	s := newStore(t)
	const contents, each = 4, 2
	defs := make([]saga.Definition, contents)
	for i := range defs {
		defs[i] = definition(t, "payment", i+1)
	}
	versions := make([]int, contents*each)
	created := make([]bool, contents*each)
	errs := make([]error, contents*each)
	parallel(contents*each, func(i int) {
		var got saga.Definition
		got, created[i], errs[i] = s.RegisterDefinition(ctx, defs[i%contents])
		versions[i] = got.Version
	})
	creators := 0
	createdContent := map[int]bool{}
	for i := range versions {
		require.NoError(t, errs[i], "goroutine %d", i)
		stored, err := s.GetDefinition(ctx, "payment", versions[i])
		require.NoError(t, err)
		require.Equal(t, defs[i%contents].Hash(), stored.Hash(), "registration %d got a version with its own content", i)
		if created[i] {
			creators++
			createdContent[i%contents] = true
		}
	}
	require.Len(t, createdContent, contents, "every content was created at least once")
	latest, err := s.GetDefinition(ctx, "payment", 0)
	require.NoError(t, err)
	require.Equal(t, creators, latest.Version, "one version per creating registration, without gaps")
	prev := ""
	for v := 1; v <= latest.Version; v++ {
		d, err := s.GetDefinition(ctx, "payment", v)
		require.NoError(t, err, "version %d", v)
		require.NotEqual(t, prev, d.Hash(), "versions %d and %d hold the same content", v-1, v)
		prev = d.Hash()
	}
}

// testDefinitionReregisterOlder registers A, B, then A again: A becomes the latest as version 3,
// as a rollback should.
func testDefinitionReregisterOlder(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := timeout(t)
	s := newStore(t)
	a, b := definition(t, "payment", 2), definition(t, "payment", 3)
	for i, def := range []saga.Definition{a, b, a} {
		got, created, err := s.RegisterDefinition(ctx, def)
		require.NoError(t, err)
		require.True(t, created, "registration %d differs from the latest", i)
		require.Equal(t, i+1, got.Version)
	}
	latest, err := s.GetDefinition(ctx, "payment", 0)
	require.NoError(t, err)
	require.Equal(t, 3, latest.Version)
	require.Equal(t, a.Hash(), latest.Hash())
}

// timeout returns a context that ends after Timeout or with the test.
func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Each version keeps who registered it: identical content registered again by someone else
// returns the existing version with its own registrant.
func testDefinitionRegistrant(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := timeout(t)
	s := newStore(t)
	v1 := definition(t, "payment", 1)
	v1.RegisteredBy = "alice"
	got, created, err := s.RegisterDefinition(ctx, v1)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "alice", got.RegisteredBy)

	same := v1
	same.RegisteredBy = "bob"
	got, created, err = s.RegisterDefinition(ctx, same)
	require.NoError(t, err)
	require.False(t, created, "identical content is a no-op")
	require.Equal(t, "alice", got.RegisteredBy, "the existing version keeps its registrant")

	v2 := definition(t, "payment", 2)
	v2.RegisteredBy = "bob"
	_, _, err = s.RegisterDefinition(ctx, v2)
	require.NoError(t, err)
	first, err := s.GetDefinition(ctx, "payment", 1)
	require.NoError(t, err)
	require.Equal(t, "alice", first.RegisteredBy)
	latest, err := s.GetDefinition(ctx, "payment", 0)
	require.NoError(t, err)
	require.Equal(t, "bob", latest.RegisteredBy)
	list, err := s.ListDefinitions(ctx, store.DefinitionFilter{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "bob", list[0].RegisteredBy)
}
