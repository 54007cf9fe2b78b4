package server

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// utf8Codec is gRPC's proto codec, except for requests with invalid UTF-8 in a string field:
// gRPC answers those with Internal before any interceptor runs, naming no field. utf8Codec
// decodes such a request with the bad bytes replaced and remembers it, and refuse then answers
// it with InvalidArgument naming the field.
type utf8Codec struct {
	encoding.CodecV2
	bad sync.Map // request message → its error
}

func newUTF8Codec() *utf8Codec {
	return &utf8Codec{CodecV2: encoding.GetCodecV2("proto")}
}

func (c *utf8Codec) option() grpc.ServerOption { return grpc.ForceServerCodecV2(c) }

// Unmarshal implements encoding.CodecV2.
func (c *utf8Codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	var utf interface{ InvalidUTF8() bool }
	m, isMsg := v.(proto.Message)
	if err == nil || !isMsg || !errors.As(err, &utf) {
		return err
	}
	field, fixed, ferr := fixUTF8(m.ProtoReflect().Descriptor(), data.Materialize(), "")
	if ferr != nil || field == "" {
		return err
	}
	if err := proto.Unmarshal(fixed, m); err != nil {
		return err
	}
	c.bad.Store(v, invalid(field, "is not valid UTF-8"))
	return nil
}

// refuse returns the error of a request Unmarshal decoded with its invalid UTF-8 replaced.
func (c *utf8Codec) refuse(req any) error {
	if err, ok := c.bad.LoadAndDelete(req); ok {
		return err.(error)
	}
	return nil
}

// fixUTF8 returns the path of the first string field of b (a message of md) that is not valid
// UTF-8, and b with the bad bytes of every such field replaced.
func fixUTF8(md protoreflect.MessageDescriptor, b []byte, prefix string) (string, []byte, error) {
	var first string
	out := make([]byte, 0, len(b))
	seen := map[protowire.Number]int{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return "", nil, protowire.ParseError(m)
			}
			out = protowire.AppendTag(out, num, typ)
			out, b = append(out, b[:m]...), b[m:]
			continue
		}
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return "", nil, protowire.ParseError(m)
		}
		b = b[m:]
		fd := md.Fields().ByNumber(num)
		path := fieldPath(prefix, fd, seen[num])
		seen[num]++
		switch {
		case fd != nil && fd.Kind() == protoreflect.StringKind && !utf8.Valid(v):
			if first == "" {
				first = path
			}
			v = []byte(strings.ToValidUTF8(string(v), "\uFFFD"))
		case fd != nil && fd.Kind() == protoreflect.MessageKind && !fd.IsMap():
			inner, fixed, err := fixUTF8(fd.Message(), v, path+".")
			if err != nil {
				return "", nil, err
			}
			if first == "" {
				first = inner
			}
			v = fixed
		}
		out = protowire.AppendTag(out, num, typ)
		out = protowire.AppendBytes(out, v)
	}
	return first, out, nil
}

// fieldPath names a field as error messages do: steps[1].name.
func fieldPath(prefix string, fd protoreflect.FieldDescriptor, i int) string {
	if fd == nil {
		return prefix + "unknown field"
	}
	if fd.IsList() {
		return fmt.Sprintf("%s%s[%d]", prefix, fd.Name(), i)
	}
	return prefix + string(fd.Name())
}
