package protocol

import (
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
)

// MaxFinalIDs bounds the ids of one final notice.
const MaxFinalIDs = 1000

// Final is a final notice: these sagas and transactions will never send this participant another
// command, so it may forget what its barrier keeps about them (docs/protocol.md, final notices).
// A saga is final once COMPLETED or COMPENSATED (a FAILED saga is not: an operator may retry it),
// a transaction once COMMITTED or ABORTED.
type Final struct {
	Sagas        []string `json:"sagas,omitempty"`
	Transactions []string `json:"transactions,omitempty"`
}

// Encode returns the notice's message to participant; id makes its message id unique.
func (f *Final) Encode(participant, id string) (Message, error) {
	body, err := json.Marshal(f)
	if err != nil {
		return Message{}, err
	}
	return Message{
		MessageID:   "final:" + participant + ":" + id,
		Type:        TypeFinal,
		ContentType: ContentType,
		Headers:     map[string]string{HeaderVersion: Version, HeaderParticipant: participant},
		Body:        body,
	}, nil
}

// DecodeFinal parses and checks a final notice. Any error wraps ErrMalformed.
func DecodeFinal(m Message) (*Final, error) {
	if err := checkBody(m, TypeFinal); err != nil {
		return nil, err
	}
	var f Final
	if err := strictUnmarshal(m.Body, &f); err != nil {
		return nil, malformed("body: %v", err)
	}
	if n := len(f.Sagas) + len(f.Transactions); n > MaxFinalIDs {
		return nil, malformed("%d ids; the limit is %d", n, MaxFinalIDs)
	}
	for field, ids := range map[string][]string{"sagas": f.Sagas, "transactions": f.Transactions} {
		for i, id := range ids {
			if _, err := uuid.Parse(id); err != nil {
				return nil, malformed("%s[%d] %q is not a UUID", field, i, id)
			}
		}
	}
	return &f, nil
}

// String summarises f for logs.
func (f *Final) String() string {
	return fmt.Sprintf("%d sagas, %d transactions", len(f.Sagas), len(f.Transactions))
}
