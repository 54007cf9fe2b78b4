package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/server"
)

// bigInput is a saga input of 256 KiB, the default limit.
func bigInput(i int) []byte {
	head := fmt.Sprintf(`{"n":%d,"pad":"`, i)
	return []byte(head + strings.Repeat("x", 256<<10-len(head)-2) + `"}`)
}

// Finding: 17 sagas with 256 KiB inputs made ListSagas answer more than the client's 4 MiB. A
// page now ends at MaxPageBytes and its token continues the listing.
func TestListSagasPagesStayUnderTheByteBudget(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{})
	a.register("big")
	want := map[string]bool{}
	for i := range 17 {
		r, err := a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "big", Input: bigInput(i)})
		require.NoError(t, err)
		want[r.GetSaga().GetId()] = true
	}
	got := map[string]bool{}
	req := &pb.ListSagasRequest{Definition: "big"}
	for pages := 0; ; pages++ {
		require.Less(t, pages, 17, "the listing ends")
		resp, err := a.sagas.ListSagas(a.ctx, req)
		require.NoError(t, err)
		require.LessOrEqual(t, proto.Size(resp), server.MaxPageBytes+1024, "a page stays within its budget")
		require.NotEmpty(t, resp.GetSagas())
		for _, s := range resp.GetSagas() {
			require.False(t, got[s.GetId()], "saga %s listed twice", s.GetId())
			got[s.GetId()] = true
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	require.Equal(t, want, got, "the pages list every saga once")
}

// longName is a name of 100 characters that starts with prefix and i.
func longName(prefix string, i int) string {
	s := fmt.Sprintf("%s%04d", prefix, i)
	return s + strings.Repeat("x", 100-len(s))
}

// Finding: ListDefinitions had no paging, so 300 definitions of 100 steps could not be listed.
func TestListDefinitionsPages(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{})
	const defs = 300
	for d := range defs {
		def := &pb.SagaDefinition{Name: longName("d", d)}
		for i := range 100 {
			def.Steps = append(def.Steps, &pb.StepDefinition{Name: longName("s", i), Participant: "p", Action: longName("a", i)})
		}
		_, err := a.sagas.RegisterDefinition(a.ctx, &pb.RegisterDefinitionRequest{Definition: def})
		require.NoError(t, err)
	}
	var names []string
	req := &pb.ListDefinitionsRequest{}
	for pages := 0; ; pages++ {
		require.Less(t, pages, defs, "the listing ends")
		resp, err := a.sagas.ListDefinitions(a.ctx, req)
		require.NoError(t, err)
		require.LessOrEqual(t, proto.Size(resp), server.MaxPageBytes+1024)
		for _, d := range resp.GetDefinitions() {
			names = append(names, d.GetName())
			require.Len(t, d.GetSteps(), 100)
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	require.Len(t, names, defs)
	for i := range defs {
		require.Equal(t, longName("d", i), names[i], "by name, each once")
	}
}

// A page holds at most MaxPageSize items, whatever the request asks.
func TestPageSizeIsCapped(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{})
	for i := range server.MaxPageSize + 1 {
		a.register(fmt.Sprintf("d%05d", i))
	}
	resp, err := a.sagas.ListDefinitions(a.ctx, &pb.ListDefinitionsRequest{PageSize: 5000})
	require.NoError(t, err)
	require.Len(t, resp.GetDefinitions(), server.MaxPageSize)
	require.NotEmpty(t, resp.GetNextPageToken())
	resp, err = a.sagas.ListDefinitions(a.ctx, &pb.ListDefinitionsRequest{PageSize: 5000, PageToken: resp.GetNextPageToken()})
	require.NoError(t, err)
	require.Len(t, resp.GetDefinitions(), 1)
	require.Empty(t, resp.GetNextPageToken())
	_, err = a.sagas.ListDefinitions(a.ctx, &pb.ListDefinitionsRequest{PageSize: -1})
	requireCode(t, err, codes.InvalidArgument, "page_size")
}

// Page tokens are opaque and checked: a token that is not one, one of another listing and one
// of the same listing with other filters are InvalidArgument.
func TestPageTokensAreChecked(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{})
	a.register("one")
	a.register("two")
	for range 3 {
		_, err := a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{SagaId: uuid.NewString(), Definition: "one"})
		require.NoError(t, err)
	}
	first, err := a.sagas.ListSagas(a.ctx, &pb.ListSagasRequest{Definition: "one", PageSize: 1})
	require.NoError(t, err)
	tok := first.GetNextPageToken()
	require.NotEmpty(t, tok)
	next, err := a.sagas.ListSagas(a.ctx, &pb.ListSagasRequest{Definition: "one", PageSize: 1, PageToken: tok})
	require.NoError(t, err)
	require.NotEqual(t, first.GetSagas()[0].GetId(), next.GetSagas()[0].GetId())

	defs, err := a.sagas.ListDefinitions(a.ctx, &pb.ListDefinitionsRequest{PageSize: 1})
	require.NoError(t, err)
	flipped := []byte(tok)
	flipped[len(flipped)/2] ^= 1
	for name, bad := range map[string]string{
		"garbage": "garbage", "tampered": string(flipped), "too long": strings.Repeat("A", 4096),
		"a definitions token": defs.GetNextPageToken(),
	} {
		_, err := a.sagas.ListSagas(a.ctx, &pb.ListSagasRequest{Definition: "one", PageSize: 1, PageToken: bad})
		requireCode(t, err, codes.InvalidArgument, "page_token")
		_ = name
	}
	_, err = a.sagas.ListSagas(a.ctx, &pb.ListSagasRequest{Definition: "two", PageToken: tok})
	requireCode(t, err, codes.InvalidArgument, "page_token", "same filters")
	_, err = a.txs.ListTransactions(a.ctx, &pb.ListTransactionsRequest{PageToken: tok})
	requireCode(t, err, codes.InvalidArgument, "page_token", "ListTransactions")
	_, err = a.sagas.ListDefinitions(a.ctx, &pb.ListDefinitionsRequest{PageToken: tok})
	requireCode(t, err, codes.InvalidArgument, "page_token")
}

// Finding: a 4 MiB abort reason was stored and broke every list that held its saga. Free text
// is bounded (MaxTextBytes).
func TestAbortReasonIsBounded(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{})
	a.register("one")
	r, err := a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one"})
	require.NoError(t, err)
	id := r.GetSaga().GetId()
	_, err = a.sagas.AbortSaga(a.ctx, &pb.AbortSagaRequest{SagaId: id, Reason: strings.Repeat("r", 3<<20)})
	requireCode(t, err, codes.InvalidArgument, "reason", "the limit is 1024")
	_, err = a.sagas.AbortSaga(a.ctx, &pb.AbortSagaRequest{SagaId: id, Reason: strings.Repeat("r", server.MaxTextBytes+1)})
	requireCode(t, err, codes.InvalidArgument, "reason")
	resp, err := a.sagas.AbortSaga(a.ctx, &pb.AbortSagaRequest{SagaId: id, Reason: strings.Repeat("r", server.MaxTextBytes)})
	require.NoError(t, err)
	require.Contains(t, resp.GetSaga().GetReason(), strings.Repeat("r", server.MaxTextBytes))
}
