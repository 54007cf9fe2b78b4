package protocol_test

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/sagacoord/sagacoord/protocol"
)

// TestBundleRoundTrip: every property an item has comes back; a body is a JSON value, so the
// whitespace around it is not kept.
func TestBundleRoundTrip(t *testing.T) {
	msgs := []protocol.Message{
		{MessageID: "reply:saga:1:0:action:1", Type: protocol.TypeReply, CorrelationID: "saga:1:0:action:1",
			Headers: map[string]string{protocol.HeaderVersion: "1", "x-note": "<é & \"quoted\">"}, Body: []byte(`{"outcome":"succeeded","output":{"a":[1,2,{"b":null}]}}`)},
		{MessageID: "q", Type: protocol.TypeDecisionQuery, Body: []byte(` {"tx_id":"t"} `)},
	}
	b := protocol.EncodeBundle(msgs)
	if b.Type != protocol.TypeBundle || b.Headers[protocol.HeaderVersion] != protocol.Version || !strings.HasPrefix(b.MessageID, "bundle:2:") {
		t.Fatalf("bundle properties: %+v", b)
	}
	got, err := protocol.DecodeBundle(b)
	if err != nil {
		t.Fatalf("DecodeBundle: %v", err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("%d items, want %d", len(got), len(msgs))
	}
	for i, want := range msgs {
		g := got[i]
		if g.MessageID != want.MessageID || g.Type != want.Type || g.CorrelationID != want.CorrelationID || !maps.Equal(g.Headers, want.Headers) || string(g.Body) != strings.TrimSpace(string(want.Body)) || g.ContentType != protocol.ContentType {
			t.Errorf("item %d:\n got  %+v\n want %+v", i, g, want)
		}
	}
}

func TestDecodeBundleRefuses(t *testing.T) {
	many := `{"items":[` + strings.Repeat(`{"type":"reply","body":{}},`, protocol.MaxBundleItems) + `{"type":"reply","body":{}}]}`
	for name, tc := range map[string]struct{ body, want string }{
		"not json":       {`{"items":`, "bundle body"},
		"no items":       {`{"items":[]}`, "no items"},
		"too many items": {many, "more than"},
		"nested bundle":  {`{"items":[{"type":"bundle","body":{}}]}`, "not a message type"},
		"untyped item":   {`{"items":[{"body":{}}]}`, "not a message type"},
		"item no body":   {`{"items":[{"type":"reply"}]}`, "has no body"},
		"not utf-8":      {"{\"items\":[{\"type\":\"reply\",\"body\":\"\xff\"}]}", "UTF-8"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := protocol.DecodeBundle(protocol.Message{Type: protocol.TypeBundle, Body: []byte(tc.body)})
			if !errors.Is(err, protocol.ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrMalformed mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := protocol.DecodeBundle(protocol.Message{Type: protocol.TypeReply, Body: []byte(`{"items":[]}`)}); !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("a reply decoded as a bundle: %v", err)
	}
}

func TestBundleable(t *testing.T) {
	for name, tc := range map[string]struct {
		m    protocol.Message
		want bool
	}{
		"json body":  {protocol.Message{Type: protocol.TypeReply, Body: []byte(`{}`)}, true},
		"empty body": {protocol.Message{Type: protocol.TypeReply}, false},
		"not json":   {protocol.Message{Type: protocol.TypeReply, Body: []byte(`{`)}, false},
		"a bundle":   {protocol.EncodeBundle([]protocol.Message{{Type: protocol.TypeReply, Body: []byte(`{}`)}}), false},
		"too large":  {protocol.Message{Type: protocol.TypeReply, Body: []byte(`"` + strings.Repeat("a", protocol.MaxBundleBytes) + `"`)}, false},
	} {
		if got := protocol.Bundleable(tc.m); got != tc.want {
			t.Errorf("%s: Bundleable = %v, want %v", name, got, tc.want)
		}
	}
}
