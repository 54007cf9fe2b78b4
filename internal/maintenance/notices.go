package maintenance

import (
	"maps"
	"slices"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// FinalNotices is the coordinator's store.Notices: for each participant, the final notices
// (protocol.Final) of the deleted sagas and transactions it took part in, at most
// protocol.MaxFinalIDs ids each, to protocol.ExchangeFinals with the participant's name as the
// routing key. A participant that keeps a barrier subscribes to them to forget its rows
// (docs/protocol.md, final notices); the others never get them.
//
// Only deleted rows are announced: the coordinator can send no more commands for a saga or a
// transaction it no longer has, and a FAILED saga, which an operator may retry, is never deleted.
func FinalNotices(gone []store.Finished) ([]transport.Outgoing, error) {
	byParticipant := map[string]*protocol.Final{}
	for _, g := range gone {
		for _, p := range g.Participants {
			f := byParticipant[p]
			if f == nil {
				f = &protocol.Final{}
				byParticipant[p] = f
			}
			if g.Saga {
				f.Sagas = append(f.Sagas, g.ID.String())
			} else {
				f.Transactions = append(f.Transactions, g.ID.String())
			}
		}
	}
	var out []transport.Outgoing
	for _, p := range slices.Sorted(maps.Keys(byParticipant)) {
		for _, f := range chunkFinal(byParticipant[p]) {
			m, err := f.Encode(p, uuid.NewString())
			if err != nil {
				return nil, err
			}
			out = append(out, transport.Outgoing{Exchange: protocol.ExchangeFinals, RoutingKey: p, Message: m})
		}
	}
	return out, nil
}

// chunkFinal splits f into notices of at most protocol.MaxFinalIDs ids.
func chunkFinal(f *protocol.Final) []*protocol.Final {
	var out []*protocol.Final
	cur := &protocol.Final{}
	add := func(list func(*protocol.Final) *[]string, id string) {
		if len(cur.Sagas)+len(cur.Transactions) == protocol.MaxFinalIDs {
			out = append(out, cur)
			cur = &protocol.Final{}
		}
		l := list(cur)
		*l = append(*l, id)
	}
	for _, id := range f.Sagas {
		add(func(f *protocol.Final) *[]string { return &f.Sagas }, id)
	}
	for _, id := range f.Transactions {
		add(func(f *protocol.Final) *[]string { return &f.Transactions }, id)
	}
	return append(out, cur)
}
