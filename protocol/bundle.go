package protocol

import (
	"encoding/json"
	"strconv"
)

// TypeBundle is the type of a bundle: one broker message that carries several messages for the
// same queue (docs/protocol.md §16). Each item is handled, acknowledged, retried or dead-lettered
// as if it had come alone; the broker stores and confirms one message instead of many.
const TypeBundle = "bundle"

// Bundle limits. A publisher puts at most MaxBundleItems items and about MaxBundleBytes of bodies
// in one bundle; a reader refuses a bundle with more items, or with an item that breaks the rules
// of a message of its own (a body that is not JSON).
const (
	MaxBundleItems = 64
	MaxBundleBytes = 1 << 20
)

// bundleItem is one message in a bundle's body.
type bundleItem struct {
	MessageID     string            `json:"message_id,omitempty"`
	Type          string            `json:"type"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Body          json.RawMessage   `json:"body"`
}

// Bundleable reports whether m can travel in a bundle: its body is JSON (every sagacoord body is;
// a bundle carries bodies as JSON values, not as opaque bytes) and it is not a bundle itself.
func Bundleable(m Message) bool {
	return m.Type != TypeBundle && len(m.Body) > 0 && len(m.Body) <= MaxBundleBytes && json.Valid(m.Body)
}

// EncodeBundle returns the bundle that carries msgs, which must all be Bundleable. Its id names
// the first item and the count, for logs and the management UI.
func EncodeBundle(msgs []Message) Message {
	size := 32
	for _, m := range msgs {
		size += len(m.Body) + len(m.MessageID) + len(m.CorrelationID) + 96
	}
	buf := make([]byte, 0, size)
	buf = append(buf, `{"items":[`...)
	for i, m := range msgs {
		if i > 0 {
			buf = append(buf, ',')
		}
		// The item's fields are encoded by encoding/json, its body appended as it is: the body
		// is valid JSON already, and re-encoding it would cost a scan of every byte.
		head, _ := json.Marshal(bundleItem{MessageID: m.MessageID, Type: m.Type, CorrelationID: m.CorrelationID, Headers: m.Headers, Body: json.RawMessage("0")})
		buf = append(buf, head[:len(head)-2]...) // drops `0}`
		buf = append(buf, m.Body...)
		buf = append(buf, '}')
	}
	buf = append(buf, "]}"...)
	id := ""
	if len(msgs) > 0 {
		id = "bundle:" + strconv.Itoa(len(msgs)) + ":" + msgs[0].MessageID
	}
	return Message{
		MessageID:   id,
		Type:        TypeBundle,
		ContentType: ContentType,
		Headers:     map[string]string{HeaderVersion: Version},
		Body:        buf,
	}
}

// DecodeBundle returns the messages a bundle carries. An error wraps ErrMalformed: the bundle is
// then handled as one malformed message (dead-lettered whole).
func DecodeBundle(m Message) ([]Message, error) {
	if err := checkBody(m, TypeBundle); err != nil {
		return nil, err
	}
	var b struct {
		Items []bundleItem `json:"items"`
	}
	if err := json.Unmarshal(m.Body, &b); err != nil {
		return nil, malformed("bundle body: %v", err)
	}
	switch {
	case len(b.Items) == 0:
		return nil, malformed("bundle has no items")
	case len(b.Items) > MaxBundleItems:
		return nil, malformed("bundle has %d items, more than %d", len(b.Items), MaxBundleItems)
	}
	out := make([]Message, len(b.Items))
	for i, it := range b.Items {
		if it.Type == "" || it.Type == TypeBundle {
			return nil, malformed("bundle item %d: type %q is not a message type", i, it.Type)
		}
		if len(it.Body) == 0 {
			return nil, malformed("bundle item %d has no body", i)
		}
		out[i] = Message{
			MessageID:     it.MessageID,
			Type:          it.Type,
			ContentType:   ContentType,
			CorrelationID: it.CorrelationID,
			Headers:       it.Headers,
			Body:          it.Body,
		}
	}
	return out, nil
}
